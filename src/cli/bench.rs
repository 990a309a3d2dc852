//! `cardform bench plan | apply`: arguments and dispatch to `crate::bench`.

use std::process::ExitCode;
use std::time::Duration;

use super::Outcome;
use crate::bench;
use crate::render;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Plan with no changes over a generated project (default 1,000 merchants x 5 templates)
    Plan {
        #[arg(long, default_value_t = 1000)]
        merchants: usize,
        #[arg(long, default_value_t = 5)]
        templates: usize,
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Keep the generated project and state here instead of a temporary directory
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
    },
    /// Generate the plan benchmark's project and matching state in --dir (run by `bench plan`)
    #[command(hide = true)]
    PreparePlan {
        #[arg(long)]
        merchants: usize,
        #[arg(long)]
        templates: usize,
        #[arg(long)]
        dir: std::path::PathBuf,
    },
    /// Refresh cost: `cardform drift` over an applied program, against a sandbox with latency
    Refresh {
        #[arg(long, default_value_t = 1000)]
        merchants: usize,
        #[arg(long, default_value_t = 5)]
        templates: usize,
        #[arg(long, value_parser = super::duration, default_value = "20ms")]
        latency: Duration,
    },
    /// `cards open` over generated members against a sandbox with injected latency, then again
    Cards {
        #[arg(long, default_value_t = 10_000)]
        rows: usize,
        #[arg(long, value_parser = super::duration, default_value = "20ms")]
        latency: Duration,
        #[arg(long, default_value_t = 8)]
        parallelism: usize,
        /// A rate limit for the app (calls/s): the sandbox enforces it, the project configures it
        #[arg(long, value_name = "RPS")]
        rate_limit: Option<f64>,
        /// Then sync this many trades on the opened cards (`cards consume`), and again
        #[arg(long, default_value_t = 0)]
        trades: usize,
        /// Keep the generated project, CSV, state and sandbox here instead of a temporary directory
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
    },
    /// `cards serve` under a burst of activations (callbacks at once, round-robin over the replicas)
    Serve {
        /// Services sharing one ledger (more than one needs --state postgres://...)
        #[arg(long, default_value_t = 1)]
        replicas: usize,
        #[arg(long, default_value_t = 400)]
        activations: usize,
        #[arg(long, value_parser = super::duration, default_value = "100ms")]
        latency: Duration,
        /// Each replica's gateway calls in flight
        #[arg(long, default_value_t = 8)]
        parallelism: usize,
    },
    /// Apply new templates (with images, forms, URLs) against a sandbox with injected latency
    Apply {
        #[arg(long, default_value_t = 1000)]
        templates: usize,
        #[arg(long, value_parser = super::duration, default_value = "20ms")]
        latency: Duration,
        #[arg(long, default_value_t = 8)]
        parallelism: usize,
        /// Runs, each from an empty state against an empty sandbox; the median is reported
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// A rate limit for the app (calls/s): the sandbox enforces it (40005 above it),
        /// the project configures it (`rate_limits.per_second`)
        #[arg(long, value_name = "RPS")]
        rate_limit: Option<f64>,
    },
}

pub async fn exec(cmd: Command, over: &crate::settings::Overrides) -> Outcome {
    let work = tempfile::tempdir()?;
    // `--state postgres://…`: the plan and apply benchmarks keep their state
    // in that database (each run in a schema of its own) instead of sled.
    let pg = match &over.state {
        Some(s) => {
            let s = s.to_string_lossy().to_string();
            let location = crate::stores::Location::parse(&s).map_err(anyhow::Error::msg)?;
            if location.is_local() {
                anyhow::bail!(
                    "the benchmarks keep sled state in their own directory; --state takes a postgres:// URL here"
                )
            }
            Some(location)
        }
        None => None,
    };
    match cmd {
        Command::Plan {
            merchants,
            templates,
            runs,
            dir,
        } => {
            let b = bench::plan(
                dir.as_deref().unwrap_or(work.path()),
                merchants,
                templates,
                runs,
                pg.as_ref(),
            )?;
            render::line(&format!(
                "plan, no changes: {} merchants, {} resources: best {} ms of {:?} ms; peak memory {:.0} MB",
                b.merchants, b.resources, b.best_ms, b.runs_ms, b.peak_rss_mb
            ));
            render::json(&b);
        }
        Command::PreparePlan {
            merchants,
            templates,
            dir,
        } => {
            let resources = bench::prepare_plan(&dir, merchants, templates, pg.as_ref())?;
            render::line(&resources.to_string());
        }
        Command::Refresh {
            merchants,
            templates,
            latency,
        } => {
            let b = bench::refresh(work.path(), merchants, templates, latency).await?;
            for (what, r) in [
                ("no drift", &b.quiet),
                (
                    "one merchant's templates edited outside",
                    &b.one_merchant_edited,
                ),
            ] {
                render::line(&format!(
                    "refresh ({what}): {} templates of {} merchants, {} ms latency: {} calls ({} templates read whole, {} drifted) in {:.1} s",
                    r.checked,
                    b.merchants,
                    b.latency_ms,
                    r.calls,
                    r.queried,
                    r.drifted,
                    r.wall_ms as f64 / 1000.0
                ));
            }
            render::json(&b);
        }
        Command::Serve {
            replicas,
            activations,
            latency,
            parallelism,
        } => {
            let b = bench::serve(
                work.path(),
                replicas,
                activations,
                latency,
                parallelism,
                pg.as_ref(),
            )
            .await?;
            render::line(&format!(
                "cards serve: {} replica(s), {} activations ({} opened, {} failed) in {:.1} s = {:.1} activations/s; {:.0}% of the bound ({:.1}/s: {} x {} in flight / (3 calls x {} ms))",
                b.replicas,
                b.activations,
                b.opened,
                b.failed,
                b.wall_ms as f64 / 1000.0,
                b.per_s,
                b.per_s / b.bound_per_s * 100.0,
                b.bound_per_s,
                b.replicas,
                b.parallelism,
                b.latency_ms
            ));
            render::json(&b);
        }
        Command::Cards {
            rows,
            latency,
            parallelism,
            rate_limit,
            trades,
            dir,
        } => {
            let b = bench::cards(
                dir.as_deref().unwrap_or(work.path()),
                rows,
                latency,
                parallelism,
                rate_limit.filter(|r| *r > 0.0),
                trades,
            )
            .await?;
            let f = &b.first;
            let against = match (b.rate_limit, b.latency_bound_per_s) {
                (Some(limit), _) => format!(
                    "{:.0}% of the {limit:.0} calls/s rate limit, {} answers 40005",
                    f.calls as f64 / (f.wall_ms as f64 / 1000.0) / limit * 100.0,
                    f.throttled
                ),
                (None, Some(bound)) => format!(
                    "{:.0}% of the latency bound ({bound:.0}/s: {} in flight / {} ms)",
                    f.cards_per_s / bound * 100.0,
                    b.parallelism,
                    b.latency_ms
                ),
                (None, None) => "no latency: CPU-bound".to_string(),
            };
            render::line(&format!(
                "cards open: {} rows ({:.1} MB CSV), {} opened, {} calls in {:.1} s = {:.0} cards/s; {against}; peak memory {:.0} MB",
                b.rows,
                b.csv_mb,
                f.opened,
                f.calls,
                f.wall_ms as f64 / 1000.0,
                f.cards_per_s,
                f.peak_rss_mb
            ));
            render::line(&format!(
                "cards open again: {} already open, {} calls in {:.1} s; peak memory {:.0} MB",
                b.again.already_open,
                b.again.calls,
                b.again.wall_ms as f64 / 1000.0,
                b.again.peak_rss_mb
            ));
            if let (Some(c), Some(a)) = (&b.consume, &b.consume_again) {
                let per_s = c.calls as f64 / (c.wall_ms as f64 / 1000.0);
                let against = match (b.rate_limit, b.latency_bound_per_s) {
                    (Some(limit), _) => format!(
                        "{:.0}% of the {limit:.0} calls/s rate limit, {} answers 40005",
                        per_s / limit * 100.0,
                        c.throttled
                    ),
                    (None, Some(bound)) => {
                        format!(
                            "{:.0}% of the latency bound ({bound:.0}/s)",
                            per_s / bound * 100.0
                        )
                    }
                    (None, None) => "no latency: CPU-bound".to_string(),
                };
                render::line(&format!(
                    "cards consume: {} trades ({:.1} MB CSV), {} synced, {} calls in {:.1} s = {:.0} trades/s; {against}; peak memory {:.0} MB",
                    b.trades,
                    b.trades_csv_mb.unwrap_or_default(),
                    c.opened,
                    c.calls,
                    c.wall_ms as f64 / 1000.0,
                    c.cards_per_s,
                    c.peak_rss_mb
                ));
                render::line(&format!(
                    "cards consume again: {} already synced, {} calls in {:.1} s; peak memory {:.0} MB",
                    a.already_open,
                    a.calls,
                    a.wall_ms as f64 / 1000.0,
                    a.peak_rss_mb
                ));
            }
            render::json(&b);
        }
        Command::Apply {
            templates,
            latency,
            parallelism,
            runs,
            rate_limit,
        } => {
            let b = bench::apply(
                work.path(),
                templates,
                latency,
                parallelism,
                runs,
                pg.as_ref(),
                rate_limit.filter(|r| *r > 0.0),
            )
            .await?;
            if let Some(limit) = b.rate_limit {
                let m = &b.median;
                render::line(&format!(
                    "apply under a rate limit of {limit:.0} calls/s: {} templates, {} calls; median of {} runs: {:.1} s = {:.0} calls/s ({:.0}% of the limit); 40005 answers: {} (runs: {})",
                    b.templates,
                    b.calls,
                    b.runs.len(),
                    m.wall_ms as f64 / 1000.0,
                    m.calls_per_s,
                    m.calls_per_s / limit * 100.0,
                    m.throttled,
                    b.runs
                        .iter()
                        .map(|r| r.throttled.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            let percent =
                |f: Option<f64>| f.map_or("-".to_string(), |f| format!("{:.0}%", f * 100.0));
            let m = &b.median;
            let against = match b.latency_bound_calls_per_s {
                Some(bound) => format!(
                    "latency bound {bound:.0} calls/s ({}; runs {})",
                    percent(m.fraction_of_bound),
                    b.runs
                        .iter()
                        .map(|r| percent(r.fraction_of_bound))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                None => format!(
                    "no latency, so no latency bound (runs {} calls/s)",
                    b.runs
                        .iter()
                        .map(|r| format!("{:.0}", r.calls_per_s))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            render::line(&format!(
                "apply: {} templates, {} calls; median of {} runs: {:.1} s = {:.0} calls/s; {against}; client CPU {:.1} s, signing {:.0} us/call = {:.0}% of it",
                b.templates,
                b.calls,
                b.runs.len(),
                m.wall_ms as f64 / 1000.0,
                m.calls_per_s,
                m.client_cpu_ms as f64 / 1000.0,
                b.sign_us,
                b.signing_share_of_client_cpu * 100.0
            ));
            render::json(&b);
        }
    }
    Ok(ExitCode::SUCCESS)
}
