//! The NAT matrix: two peers behind every pair of NAT kinds (and behind the
//! same NAT) connect through a rendezvous peer in netsim, over links with
//! 40 ms round trip and 1% loss, with several seeds per pair. Prints, per
//! pair, the success rate, the path taken, the time to connect (p50/p95)
//! and the attempts needed.
//!
//! `cargo bench -p crust --bench nat_matrix` as root. Environment:
//! `NAT_MATRIX_SEEDS` (default 3), `NAT_MATRIX_JOBS` pairs at once
//! (default 4), `NAT_MATRIX_ATTEMPTS` per run (default 2),
//! `NAT_MATRIX_FILTER` (run only pairs whose name contains it),
//! `NAT_MATRIX_FIRST_SEED` (default 1000: seeds 1000, 1001, …),
//! `NAT_MATRIX_LINUX_PLAIN` (set: the Linux router without miniupnpd is a
//! kind too), `RUST_LOG` (crust's logs on stderr).

// A bench binary: a poisoned lock or a failed run should stop it loudly.
#![allow(clippy::unwrap_used)]

#[cfg(target_os = "linux")]
#[path = "../tests/nat_common/mod.rs"]
mod nat_common;

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("the NAT matrix needs netsim, which is Linux only");
}

#[cfg(target_os = "linux")]
fn main() {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use nat_common::{Conditions, Outcome, Pair, Side};
    use netsim::NatPreset;

    if !nat_common::prerequisites(&[]) {
        return;
    }
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let seeds = env("NAT_MATRIX_SEEDS", 3);
    let first_seed = env("NAT_MATRIX_FIRST_SEED", 1000);
    let jobs = env("NAT_MATRIX_JOBS", 4).max(1) as usize;
    let attempts = env("NAT_MATRIX_ATTEMPTS", 2) as u32;
    let filter = std::env::var("NAT_MATRIX_FILTER").unwrap_or_default();
    let linux = nat_common::has_tool("nft") && nat_common::has_tool("miniupnpd");
    if !linux {
        eprintln!("nft or miniupnpd missing: the Linux router rows are left out");
    }

    let mut kinds: Vec<Side> = NatPreset::ALL.iter().map(|p| Side::Nat(*p)).collect();
    if linux {
        kinds.push(Side::Linux { upnp: true });
        // The Linux router without miniupnpd too: its own NAT behaviour,
        // which the UPnP mapping otherwise hides.
        if std::env::var_os("NAT_MATRIX_LINUX_PLAIN").is_some() {
            kinds.push(Side::Linux { upnp: false });
        }
    }
    let mut pairs = Vec::new();
    for (i, a) in kinds.iter().enumerate() {
        for b in &kinds[i..] {
            pairs.push(Pair {
                a: *a,
                b: *b,
                same_nat: false,
            });
        }
    }
    for same in [
        NatPreset::PortRestrictedCone,
        NatPreset::Symmetric,
        NatPreset::SymmetricRandom,
        NatPreset::Cgnat,
    ] {
        pairs.push(Pair {
            a: Side::Nat(same),
            b: Side::Nat(same),
            same_nat: true,
        });
    }
    let name = |p: &Pair| {
        if p.same_nat {
            format!("{} (same NAT)", p.a.name())
        } else {
            format!("{} × {}", p.a.name(), p.b.name())
        }
    };
    pairs.retain(|p| name(p).contains(&filter));
    let conditions = Conditions {
        rtt: Duration::from_millis(40),
        loss: 0.01,
        direct_within: Some(Duration::from_secs(10)),
    };

    let work: Arc<Mutex<Vec<(usize, Pair, u64)>>> = Arc::new(Mutex::new(
        pairs
            .iter()
            .enumerate()
            .flat_map(|(i, p)| (0..seeds).map(move |s| (i, *p, first_seed + s)))
            .rev()
            .collect(),
    ));
    let results: Arc<Mutex<Vec<Vec<Outcome>>>> =
        Arc::new(Mutex::new(vec![Vec::new(); pairs.len()]));
    let lost: Arc<Mutex<Vec<String>>> = Arc::default();
    let started = std::time::Instant::now();
    let workers: Vec<_> = (0..jobs)
        .map(|_| {
            let (work, results, lost) = (work.clone(), results.clone(), lost.clone());
            std::thread::spawn(move || {
                loop {
                    let next = work.lock().unwrap().pop();
                    let Some((i, pair, seed)) = next else { break };
                    // A run whose simulated host failed (not crust: the
                    // harness, say) is told and left out, not the end of
                    // the whole matrix.
                    let run = std::panic::catch_unwind(|| {
                        nat_common::run_pair(pair, conditions, seed, attempts)
                    });
                    let Ok(outcome) = run else {
                        eprintln!("{pair:?} seed {seed}: the run failed (see the panic above)");
                        lost.lock().unwrap().push(format!("{pair:?} seed {seed}"));
                        continue;
                    };
                    eprintln!(
                        "{:?} seed {seed}: {:?} in {:?} ({} attempts), direct: {:?} after {:?}",
                        pair,
                        outcome.result,
                        outcome.elapsed,
                        outcome.attempts,
                        outcome.direct,
                        outcome.direct_after
                    );
                    results.lock().unwrap()[i].push(outcome);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let results = results.lock().unwrap();

    println!(
        "\nNAT matrix: {} pairs × {seeds} seeds, 40 ms RTT, 1% loss, ≤{attempts} attempts per run, {:?} in all\n",
        pairs.len(),
        started.elapsed()
    );
    println!(
        "| pair | success | path | p50 | p95 | attempts (mean) | direct ≤ 10 s | to direct p50 / p95 | signal → first packet p50 / p95 (RTT) | signal → direct connected p50 / p95 (RTT) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let (mut total, mut ok, mut direct_runs) = (0, 0, 0);
    for (pair, outcomes) in pairs.iter().zip(results.iter()) {
        let successes: Vec<&Outcome> = outcomes.iter().filter(|o| o.result.is_ok()).collect();
        total += outcomes.len();
        ok += successes.len();
        let mut paths: Vec<String> = successes
            .iter()
            .map(|o| {
                let (path, transport) = o.result.as_ref().unwrap();
                let t = format!("{transport:?}").to_lowercase();
                match path {
                    crust::ConnectionPath::Direct => format!("direct {t}"),
                    crust::ConnectionPath::HolePunched => format!("punched {t}"),
                    crust::ConnectionPath::Relayed { .. } => format!("relayed {t}"),
                    _ => format!("{path:?} {t}"),
                }
            })
            .collect();
        paths.sort();
        let mut summary: Vec<String> = Vec::new();
        for p in &paths {
            if !summary.iter().any(|s| s.starts_with(p.as_str())) {
                let n = paths.iter().filter(|q| *q == p).count();
                summary.push(format!("{p} {n}"));
            }
        }
        let mut times: Vec<Duration> = successes.iter().map(|o| o.elapsed).collect();
        times.sort();
        let pct = |q: f64| {
            times
                .get(((times.len() as f64 - 1.0) * q).round() as usize)
                .map_or("—".to_owned(), |d| format!("{} ms", d.as_millis()))
        };
        let mean_attempts = if successes.is_empty() {
            "—".to_owned()
        } else {
            format!(
                "{:.2}",
                successes.iter().map(|o| f64::from(o.attempts)).sum::<f64>()
                    / successes.len() as f64
            )
        };
        let mut to_direct: Vec<Duration> = outcomes
            .iter()
            .filter_map(|o| o.direct_after)
            .filter(|d| *d <= Duration::from_secs(10))
            .collect();
        to_direct.sort();
        direct_runs += to_direct.len();
        let dpct = |q: f64| {
            to_direct
                .get(((to_direct.len() as f64 - 1.0) * q).round() as usize)
                .map_or("—".to_owned(), |d| format!("{} ms", d.as_millis()))
        };
        // From the rendezvous signal, in round trips of the path.
        let rtts = |pick: fn(&crust::TraversalTiming) -> Option<Duration>| {
            let mut v: Vec<f64> = outcomes
                .iter()
                .filter(|o| o.direct_after.is_some_and(|d| d <= Duration::from_secs(10)))
                .filter_map(|o| o.direct_timing.as_ref().and_then(pick))
                .map(|d| d.as_secs_f64() / conditions.rtt.as_secs_f64())
                .collect();
            v.sort_by(f64::total_cmp);
            let at = |q: f64| {
                v.get(((v.len() as f64 - 1.0) * q).round() as usize)
                    .copied()
            };
            match (at(0.5), at(0.95)) {
                (Some(p50), Some(p95)) => format!("{p50:.1} / {p95:.1} ({})", v.len()),
                _ => "—".to_owned(),
            }
        };
        let first_packet = rtts(|t| t.first_packet);
        let connected = rtts(|t| Some(t.connected));
        println!(
            "| {} | {}/{} | {} | {} | {} | {} | {}/{} | {} / {} | {first_packet} | {connected} |",
            name(pair),
            successes.len(),
            outcomes.len(),
            if summary.is_empty() {
                "—".into()
            } else {
                summary.join(", ")
            },
            pct(0.5),
            pct(0.95),
            mean_attempts,
            to_direct.len(),
            outcomes.len(),
            dpct(0.5),
            dpct(0.95)
        );
    }
    println!("\n{ok}/{total} runs connected, {direct_runs}/{total} direct within 10 s");
    let lost = lost.lock().unwrap();
    if !lost.is_empty() {
        println!(
            "{} runs failed in the harness and are left out: {lost:?}",
            lost.len()
        );
    }
}
