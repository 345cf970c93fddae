//! The compiled policy of the [`local`](crate::local) layer, built once per route when the
//! route table compiles and read by the layer per request.

use super::rewrite::PathRewrite;
use crate::body::MeshBody;
use crate::grpc;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use mesh_core::config::route::{DirectResponseAction, RedirectAction};

/// A compiled local answer.
#[derive(Debug)]
pub enum LocalAnswer {
    /// A redirect.
    Redirect(Redirect),
    /// A fixed response.
    Direct {
        /// Status.
        status: StatusCode,
        /// Body (may be empty).
        body: Bytes,
    },
}

/// A compiled redirect.
#[derive(Debug)]
pub struct Redirect {
    scheme: Option<String>,
    host: Option<String>,
    port: Option<u16>,
    path: Option<PathRewrite>,
    strip_query: bool,
    status: StatusCode,
}

impl LocalAnswer {
    /// Compiles a redirect; `matched` is the route's path prefix (for `prefix_rewrite`).
    pub fn redirect(r: &RedirectAction, matched: Option<&str>) -> Result<Self, String> {
        let path = if let Some(p) = &r.path_redirect {
            Some(PathRewrite::Whole(p.clone()))
        } else if let Some(p) = &r.prefix_rewrite {
            Some(PathRewrite::prefix(matched, p))
        } else if let Some(rr) = &r.regex_rewrite {
            Some(PathRewrite::regex(rr)?)
        } else {
            None
        };
        Ok(Self::Redirect(Redirect {
            scheme: if r.https_redirect {
                Some("https".into())
            } else {
                r.scheme_redirect.clone()
            },
            host: r.host_redirect.clone(),
            port: r.port_redirect.and_then(|p| u16::try_from(p).ok()),
            path,
            strip_query: r.strip_query,
            status: StatusCode::from_u16(r.response_code.status()).map_err(|e| e.to_string())?,
        }))
    }

    /// Compiles a direct response.
    pub fn direct(d: &DirectResponseAction) -> Result<Self, String> {
        Ok(Self::Direct {
            status: StatusCode::from_u16(d.status as u16).map_err(|e| e.to_string())?,
            body: Bytes::from(
                d.body
                    .as_ref()
                    .map(|b| b.inline_string.clone())
                    .unwrap_or_default(),
            ),
        })
    }

    /// The response for `req`.
    pub fn respond<B>(&self, req: &Request<B>) -> Response<MeshBody> {
        let is_grpc = grpc::is_grpc(req.headers());
        match self {
            LocalAnswer::Direct { status, body } => {
                let text = String::from_utf8_lossy(body);
                grpc::local_answer(is_grpc, status.as_u16(), None, &text)
            }
            LocalAnswer::Redirect(r) => {
                if is_grpc {
                    return grpc::local_answer(true, r.status.as_u16(), None, "redirect");
                }
                let mut res = Response::new(MeshBody::empty());
                *res.status_mut() = r.status;
                if let Ok(v) = HeaderValue::from_str(&r.location(req)) {
                    res.headers_mut().insert(header::LOCATION, v);
                }
                res
            }
        }
    }
}

impl Redirect {
    /// The `location` for `req`, following Envoy: a new scheme or host drops the original
    /// port unless `port_redirect` sets one; a `path_redirect` with a query replaces the query.
    pub fn location<B>(&self, req: &Request<B>) -> String {
        let uri = req.uri();
        let orig_scheme = uri.scheme_str().unwrap_or("http");
        let authority = uri.authority().cloned().or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| http::uri::Authority::try_from(h.as_bytes()).ok())
        });
        let orig_host = authority.as_ref().map_or("", |a| a.host());
        let orig_port = authority.as_ref().and_then(|a| a.port_u16());
        let scheme = self.scheme.as_deref().unwrap_or(orig_scheme);
        let host = self.host.as_deref().unwrap_or(orig_host);
        let port = match self.port {
            Some(p) => Some(p),
            None if self.scheme.is_some() || self.host.is_some() => None,
            None => orig_port,
        };
        let path = uri.path();
        let mut query = uri.query().map(str::to_owned);
        let new_path = match &self.path {
            Some(PathRewrite::Whole(p)) => match p.split_once('?') {
                Some((p, q)) => {
                    query = Some(q.to_owned());
                    p.to_owned()
                }
                None => p.clone(),
            },
            Some(rw) => rw.apply(path),
            None => path.to_owned(),
        };
        if self.strip_query {
            query = None;
        }
        let mut out = format!("{scheme}://{host}");
        let default_port = match scheme {
            "https" => Some(443),
            "http" => Some(80),
            _ => None,
        };
        if let Some(p) = port
            && Some(p) != default_port
        {
            out.push_str(&format!(":{p}"));
        }
        out.push_str(&new_path);
        if let Some(q) = query.filter(|q| !q.is_empty()) {
            out.push('?');
            out.push_str(&q);
        }
        out
    }
}
