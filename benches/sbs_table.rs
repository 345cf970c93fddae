//! The side-by-side harness's table: per contender and cell, medians over rounds and the
//! throughput ratio to its baseline paired round by round (they run back to back, so the
//! machine's drift cancels).

use super::baseline;
use mesh_benches::harness::{Row, median};
use std::collections::HashMap;

/// The markdown table of `results` for the contenders `run`, over the cells `wanted` keeps.
pub(crate) fn render(
    results: &HashMap<(String, usize, usize), Vec<Row>>,
    run: &[&str],
    concurrencies: &[usize],
    sizes: &[usize],
    wanted: impl Fn(usize, usize) -> bool,
) -> String {
    let mut table = String::from(
        "| contender | c | body | req/s | vs bare | vs bare, range | p50 µs | p90 µs | p99 µs | max µs | CPU µs/req | client user µs/req | RSS MiB |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for &c in concurrencies {
        for &size in sizes {
            if !wanted(c, size) {
                continue;
            }
            let med = |contender: &str, key: &str| -> f64 {
                let rows = &results[&(contender.to_owned(), c, size)];
                let mut xs: Vec<f64> = rows
                    .iter()
                    .map(|r| match key {
                        "rps" => r["requests"] / r["secs"],
                        "cpu" => {
                            (r["cpu_us"] + r.get("sidecar_cpu_us").copied().unwrap_or(0.0))
                                / r["requests"].max(1.0)
                        }
                        "user" => r.get("user_us").copied().unwrap_or(0.0) / r["requests"].max(1.0),
                        k => r[k],
                    })
                    .collect();
                median(&mut xs)
            };
            // Throughput against the baseline run in the same round (they run back to back, so
            // the machine's drift cancels), as the median and range over rounds.
            let paired = |contender: &str| -> Vec<f64> {
                let rps = |r: &Row| r["requests"] / r["secs"];
                let base = &results[&(baseline(contender).to_owned(), c, size)];
                let mut ratios: Vec<f64> = results[&(contender.to_owned(), c, size)]
                    .iter()
                    .zip(base)
                    .map(|(r, b)| rps(r) / rps(b).max(1.0))
                    .collect();
                ratios.sort_by(|a, b| a.total_cmp(b));
                ratios
            };
            for &contender in run {
                let rows = &results[&(contender.to_owned(), c, size)];
                assert!(
                    rows.iter().all(|r| r["requests"] > 0.0),
                    "{contender} served no request"
                );
                assert!(
                    rows.iter().all(|r| r["errors"] == 0.0),
                    "{contender} had errors: {rows:?}"
                );
                let rps = med(contender, "rps");
                let mut ratios = paired(contender);
                let (lo, hi) = (ratios[0], ratios[ratios.len() - 1]);
                table.push_str(&format!(
                    "| {contender} | {c} | {size} B | {rps:.0} | {:.2}× | {lo:.2}–{hi:.2} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1} | {:.1} | {:.1} |\n",
                    median(&mut ratios),
                    med(contender, "p50"),
                    med(contender, "p90"),
                    med(contender, "p99"),
                    med(contender, "max"),
                    med(contender, "cpu"),
                    med(contender, "user"),
                    med(contender, "rss_kb") / 1024.0,
                ));
            }
        }
    }
    table
}
