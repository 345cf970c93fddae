//! Access logs: one structured (JSON) line per request, written when its response stream ends,
//! beside its metrics.
//!
//! Why with the metrics: both need the same end of stream (the gRPC status in the trailers,
//! the duration and size of the whole answer), so the line rides in the same record and
//! costs nothing when no log is configured. The line's fields are gathered when the request
//! starts (time, method, authority, path, protocol) and when its answer's head comes (cluster,
//! endpoint, the peer's identity); allocation happens only for requests that are logged.

use super::filter::LogFilter;
use super::format::LogFormat;
use mesh_core::config::listener::{AccessLogConfig, AccessLogFilter};
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};

/// A log's writer, shared by its clones (and by logs of one path, see
/// [`AccessLog::from_config`]).
type Out = Mutex<Sink>;

/// A writer, and whether each line is flushed at once (a caller's writer) or left to the
/// buffer and its flusher thread (files and stdout).
struct Sink {
    w: Box<dyn Write + Send>,
    flush_each: bool,
}

/// Where access log lines go: stdout, a file (appended), or any writer. Cheap to clone; lines
/// from concurrent requests never interleave.
///
/// ```
/// use std::io::Write;
/// use std::sync::{Arc, Mutex};
/// #[derive(Clone, Default)]
/// struct Lines(Arc<Mutex<Vec<u8>>>);
/// impl Write for Lines {
///     fn write(&mut self, b: &[u8]) -> std::io::Result<usize> { self.0.lock().unwrap().write(b) }
///     fn flush(&mut self) -> std::io::Result<()> { Ok(()) }
/// }
/// let lines = Lines::default();
/// let log = mesh_tower::telemetry::AccessLog::writer(lines.clone());
/// let telemetry = mesh_tower::telemetry::Telemetry::new(Default::default()).with_access_log(log);
/// # let _ = telemetry;
/// ```
#[derive(Clone)]
pub struct AccessLog {
    out: Arc<Out>,
    /// Envoy's format (none: the JSON line).
    pub(super) format: Option<Arc<LogFormat>>,
    /// Which requests are written (none: all).
    pub(super) filter: Option<Arc<LogFilter>>,
    /// The next log every request is also written to (a listener with several loggers, as
    /// Envoy writes each of an HttpConnectionManager's `access_log`).
    also: Option<Arc<AccessLog>>,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog").finish_non_exhaustive()
    }
}

impl AccessLog {
    /// Lines to the process's stdout, buffered and flushed every second (as Envoy flushes its
    /// access logs on a timer rather than per line: a write per request costs a system call).
    pub fn stdout() -> Self {
        Self::buffered(std::io::stdout())
    }

    /// Lines appended to the file at `path` (created if missing), buffered and flushed every
    /// second.
    pub fn file(path: impl AsRef<Path>) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Self::buffered(file))
    }

    /// The log a listener's config names (`access_log` on a listener, from YAML or an xDS
    /// HttpConnectionManager): `/dev/stdout`, `/dev/stderr` or a file, in the config's format.
    /// Logs of one path share one writer (and buffer) in the process, so lines of different
    /// listeners never interleave inside a line; only the format is each log's own.
    ///
    /// ```
    /// use mesh_core::config::listener::AccessLogConfig;
    /// use mesh_tower::telemetry::AccessLog;
    /// let config = AccessLogConfig {
    ///     path: "/dev/stdout".into(),
    ///     text_format: Some("%REQ(:METHOD)% %RESPONSE_CODE%\n".into()),
    ///     ..AccessLogConfig::default()
    /// };
    /// let log = AccessLog::from_config(&config).unwrap();
    /// # let _ = log;
    /// ```
    pub fn from_config(config: &AccessLogConfig) -> Result<Self, String> {
        static OPEN: Mutex<Vec<(String, Weak<Out>)>> = Mutex::new(Vec::new());
        let out = {
            let mut open = OPEN.lock().unwrap_or_else(|e| e.into_inner());
            open.retain(|(_, w)| w.strong_count() > 0);
            match open
                .iter()
                .find_map(|(p, w)| (*p == config.path).then(|| w.upgrade()))
            {
                Some(Some(out)) => out,
                _ => {
                    let log = match config.path.as_str() {
                        "/dev/stdout" => Self::stdout(),
                        "/dev/stderr" => Self::buffered(std::io::stderr()),
                        path => Self::file(path)
                            .map_err(|e| format!("access log {path:?} cannot be opened: {e}"))?,
                    };
                    open.push((config.path.clone(), Arc::downgrade(&log.out)));
                    log.out
                }
            }
        };
        let format = match (&config.text_format, &config.json_format) {
            (Some(text), _) => Some(LogFormat::text(text)?),
            (None, Some(json)) => {
                let text = serde_json::to_string(json).map_err(|e| e.to_string())?;
                Some(LogFormat::json(&text)?)
            }
            (None, None) => None,
        };
        Ok(Self {
            out,
            format: format.map(Arc::new),
            filter: match &config.filter {
                Some(f) => {
                    Some(Arc::new(LogFilter::new(f).map_err(|e| {
                        format!("access log {:?}: filter: {e}", config.path)
                    })?))
                }
                None => None,
            },
            also: None,
        })
    }

    /// The logs a listener's `access_log` list names, each request written to every one (in
    /// its own format and filter). A log that cannot be opened is reported in the returned
    /// errors and left out; `None` when none could be opened (or there are none).
    ///
    /// ```
    /// use mesh_core::config::listener::AccessLogConfig;
    /// use mesh_tower::telemetry::AccessLog;
    /// let out = AccessLogConfig { path: "/dev/stdout".into(), ..Default::default() };
    /// let err = AccessLogConfig { path: "/dev/stderr".into(), ..Default::default() };
    /// let (log, problems) = AccessLog::from_configs(&[out, err]);
    /// assert!(log.is_some() && problems.is_empty());
    /// ```
    pub fn from_configs(configs: &[AccessLogConfig]) -> (Option<Self>, Vec<String>) {
        let (mut logs, mut problems) = (Vec::new(), Vec::new());
        for c in configs {
            match Self::from_config(c) {
                Ok(log) => logs.push(log),
                Err(e) => problems.push(e),
            }
        }
        let chained = logs.into_iter().rev().fold(None, |next, mut log: Self| {
            log.also = next.map(Arc::new);
            Some(log)
        });
        (chained, problems)
    }

    /// This log, then `next` (and the logs `next` is chained to): every request is written
    /// to all of them.
    ///
    /// ```
    /// use mesh_tower::telemetry::AccessLog;
    /// let both = AccessLog::stdout().and_also(AccessLog::writer(std::io::sink()));
    /// # let _ = both;
    /// ```
    pub fn and_also(self, next: AccessLog) -> Self {
        let also = match &self.also {
            None => next,
            Some(rest) => AccessLog::clone(rest).and_also(next),
        };
        Self {
            also: Some(Arc::new(also)),
            ..self
        }
    }

    /// This log and the ones it is chained to, in order.
    pub(super) fn chain(&self) -> impl Iterator<Item = &AccessLog> {
        std::iter::successors(Some(self), |l| l.also.as_deref())
    }

    /// Lines to `out` through a 64 KiB buffer, flushed when full and every second by a thread
    /// that ends with the last clone of the log.
    fn buffered(out: impl Write + Send + 'static) -> Self {
        let log = Self::new(std::io::BufWriter::with_capacity(64 * 1024, out), false);
        let weak = Arc::downgrade(&log.out);
        let flusher = std::thread::Builder::new()
            .name("mesh-access-log".into())
            .spawn(move || {
                while let Some(out) = {
                    std::thread::sleep(std::time::Duration::from_secs(1));
                    weak.upgrade()
                } {
                    let _ = out.lock().unwrap_or_else(|e| e.into_inner()).w.flush();
                }
            });
        if let Err(e) = flusher {
            tracing::warn!(error = %e, "no access log flusher: lines are written when the buffer fills");
        }
        log
    }

    /// Lines to `out`, one `write_all` and `flush` per line (buffer in `out` if that is too
    /// many writes).
    pub fn writer(out: impl Write + Send + 'static) -> Self {
        Self::new(out, true)
    }

    fn new(out: impl Write + Send + 'static, flush_each: bool) -> Self {
        Self {
            out: Arc::new(Mutex::new(Sink {
                w: Box::new(out),
                flush_each,
            })),
            format: None,
            filter: None,
            also: None,
        }
    }

    /// This log writing its lines in `format` (Envoy's format strings) instead of the
    /// default JSON line.
    ///
    /// ```
    /// use mesh_tower::telemetry::{AccessLog, LogFormat};
    /// let format = LogFormat::text("%REQ(:METHOD)% %REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_FLAGS%\n").unwrap();
    /// let log = AccessLog::stdout().with_format(format);
    /// # let _ = log;
    /// ```
    pub fn with_format(mut self, format: LogFormat) -> Self {
        self.format = Some(Arc::new(format));
        self
    }

    /// This log writing only the requests `filter` passes (Envoy's access log filters, CEL
    /// among them), or why the filter cannot be evaluated (a CEL expression that does not
    /// parse; a validated config's filters always can).
    ///
    /// ```
    /// use mesh_core::config::listener::{AccessLogFilter, CompareOp, Comparison};
    /// use mesh_tower::telemetry::AccessLog;
    /// let errors_only = AccessLogFilter::StatusCode(Comparison { op: CompareOp::Ge, value: 400 });
    /// let log = AccessLog::stdout().with_filter(&errors_only).unwrap();
    /// let slow = AccessLogFilter::Cel("request.duration > duration('2s')".into());
    /// let slow_only = AccessLog::stdout().with_filter(&slow).unwrap();
    /// assert!(AccessLog::stdout().with_filter(&AccessLogFilter::Cel("1 +".into())).is_err());
    /// # let _ = (log, slow_only);
    /// ```
    pub fn with_filter(mut self, filter: &AccessLogFilter) -> Result<Self, String> {
        self.filter = Some(Arc::new(LogFilter::new(filter)?));
        Ok(self)
    }

    /// Writes out what is buffered (tests read the file at once instead of waiting for the
    /// flusher).
    #[cfg(test)]
    pub(crate) fn flush(&self) {
        let _ = self.out.lock().unwrap_or_else(|e| e.into_inner()).w.flush();
    }

    pub(super) fn write(&self, line: &str) {
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        // A log that cannot be written must not fail the request it describes. A buffered
        // log's flusher writes the buffer out; flushing here would be a system call per line.
        let flush = out.flush_each;
        let _ = out.w.write_all(line.as_bytes());
        if flush {
            let _ = out.w.flush();
        }
    }
}
