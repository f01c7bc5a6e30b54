//! The `netsim` command: run a scenario file and report, keep a virtual
//! internet up, or run a program inside one of its hosts.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use netsim::scenario::Scenario;
use netsim::{Network, Stats};
use serde::{Deserialize, Serialize};

#[derive(Parser)]
#[command(
    name = "netsim",
    version,
    about = "A virtual internet on one Linux machine"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the scenario's network, run its hosts' commands, print a report.
    /// Exits non-zero if a host failed.
    Run {
        /// The scenario file.
        scenario: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Override the scenario's seed.
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Build the network and keep it up until Ctrl-C; `netsim exec` joins it.
    Up {
        /// The scenario file.
        scenario: PathBuf,
        /// Name of the network (default: the file's stem).
        #[arg(long)]
        name: Option<String>,
    },
    /// Run a program inside a host of a network started by `netsim up`.
    Exec {
        /// The host's name.
        host: String,
        /// Which network, if several are up.
        #[arg(long)]
        net: Option<String>,
        /// The program and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// List the networks started by `netsim up` and their hosts.
    List,
}

fn state_dir() -> PathBuf {
    std::env::var_os("NETSIM_STATE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/netsim"))
}

#[derive(Serialize, Deserialize)]
struct UpState {
    pid: u32,
    hosts: BTreeMap<String, HostState>,
}

#[derive(Serialize, Deserialize)]
struct HostState {
    netns: PathBuf,
    addrs: Vec<std::net::Ipv4Addr>,
}

#[derive(Serialize)]
struct HostResult {
    name: String,
    command: Vec<String>,
    status: String,
    success: bool,
    stdout: String,
    stderr: String,
    seconds: f64,
}

#[derive(Serialize)]
struct Report {
    seed: u64,
    hosts: Vec<HostResult>,
    stats: Stats,
}

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let code = match real_main(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("netsim: {e:#}");
            2
        }
    };
    std::process::exit(code);
}

fn real_main(cli: Cli) -> Result<i32> {
    match cli.cmd {
        Cmd::Run {
            scenario,
            json,
            seed,
        } => run(&scenario, json, seed),
        Cmd::Up { scenario, name } => up(&scenario, name),
        Cmd::Exec { host, net, command } => exec(&host, net.as_deref(), &command),
        Cmd::List => list(),
    }
}

fn load(path: &Path) -> Result<Scenario> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Scenario::from_toml(&text).with_context(|| format!("in {}", path.display()))
}

fn become_root_if_needed() -> Result<()> {
    // Still single-threaded here, as a user namespace requires.
    netsim::enter_user_namespace()
        .context("entering an unprivileged user namespace (are user namespaces enabled?)")
}

fn start(s: &Scenario, seed: Option<u64>) -> Result<(Network, netsim::Topology)> {
    let mut topo = s.topology()?;
    if let Some(seed) = seed {
        topo.seed = seed;
    }
    let net = Network::start(&topo).context("starting the virtual network")?;
    Ok((net, topo))
}

/// A started host command: scenario index, arguments, process, start time.
type Started = (usize, Vec<String>, std::process::Child, Instant);

fn spawn_commands(s: &Scenario, net: &Network, capture: bool) -> Result<Vec<Started>> {
    let mut order: Vec<usize> = (0..s.hosts.len()).collect();
    order.sort_by_key(|i| s.hosts[*i].delay_ms);
    let t0 = Instant::now();
    let mut children = Vec::new();
    for i in order {
        let Some((args, env)) = s.command(i)? else {
            continue;
        };
        let wait = Duration::from_millis(s.hosts[i].delay_ms).saturating_sub(t0.elapsed());
        std::thread::sleep(wait);
        let mut cmd = Command::new(&args[0]);
        cmd.args(&args[1..])
            .envs(env)
            .env("NETSIM_HOST", &s.hosts[i].name);
        if capture {
            cmd.stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
        }
        let host = net.host_id(&s.hosts[i].name).context("host vanished")?;
        let child = net
            .command(host, &mut cmd)
            .with_context(|| format!("starting {:?} in host {}", args, s.hosts[i].name))?;
        children.push((i, args, child, Instant::now()));
    }
    Ok(children)
}

fn run(path: &Path, json: bool, seed: Option<u64>) -> Result<i32> {
    let s = load(path)?;
    become_root_if_needed()?;
    let (net, _) = start(&s, seed)?;
    let children = spawn_commands(&s, &net, true)?;
    let deadline = Instant::now() + Duration::from_secs(s.timeout_secs);
    let mut results = Vec::new();
    // Read outputs on threads so full pipes never block a child.
    let mut pending: Vec<_> = children
        .into_iter()
        .map(|(i, args, mut child, started)| {
            let mut out = child.stdout.take();
            let mut err = child.stderr.take();
            let o = std::thread::spawn(move || {
                let mut s = String::new();
                if let Some(o) = out.as_mut() {
                    let _ = o.read_to_string(&mut s);
                }
                s
            });
            let e = std::thread::spawn(move || {
                let mut s = String::new();
                if let Some(e) = err.as_mut() {
                    let _ = e.read_to_string(&mut s);
                }
                s
            });
            (i, args, child, started, o, e, None)
        })
        .collect();
    loop {
        let mut all_done = true;
        for p in pending.iter_mut() {
            if p.6.is_none() {
                match p.2.try_wait()? {
                    Some(st) => p.6 = Some((st.to_string(), st.success(), p.3.elapsed())),
                    None if Instant::now() >= deadline => {
                        let _ = p.2.kill();
                        let _ = p.2.wait();
                        p.6 = Some((
                            format!("killed after the {} s timeout", s.timeout_secs),
                            false,
                            p.3.elapsed(),
                        ));
                    }
                    None => all_done = false,
                }
            }
        }
        if all_done {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let seed_used = net.seed();
    let stats = net.shutdown();
    for (i, args, _, _, o, e, st) in pending {
        let (status, success, took) =
            st.unwrap_or_else(|| ("unknown".into(), false, Duration::ZERO));
        results.push(HostResult {
            name: s.hosts[i].name.clone(),
            command: args,
            status,
            success,
            stdout: o.join().unwrap_or_default(),
            stderr: e.join().unwrap_or_default(),
            seconds: took.as_secs_f64(),
        });
    }
    let failed = results.iter().any(|r| !r.success);
    let report = Report {
        seed: seed_used,
        hosts: results,
        stats,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    if failed {
        eprintln!("netsim: a host failed; seed {seed_used} (--seed {seed_used} replays it)");
    }
    Ok(i32::from(failed))
}

fn print_report(r: &Report) {
    println!("seed {}", r.seed);
    println!("\nhosts:");
    for h in &r.hosts {
        println!(
            "  {} [{}] {:.2}s: {}",
            h.name,
            if h.success { "ok" } else { "FAILED" },
            h.seconds,
            h.status
        );
        println!("    $ {}", h.command.join(" "));
        for l in h.stdout.lines() {
            println!("    | {l}");
        }
        for l in h.stderr.lines() {
            println!("    ! {l}");
        }
    }
    println!("\nlinks (sent/delivered/lost/queue-drop/mtu-drop/dup):");
    for l in &r.stats.links {
        for (dir, s) in [("up", &l.up), ("down", &l.down)] {
            println!(
                "  {:<16} {:<4} {}/{}/{}/{}/{}/{}  {} bytes",
                l.name,
                dir,
                s.sent,
                s.delivered,
                s.dropped_loss,
                s.dropped_queue,
                s.dropped_mtu,
                s.duplicated,
                s.delivered_bytes
            );
        }
    }
    if !r.stats.nats.is_empty() {
        println!("\nNATs:");
        for n in &r.stats.nats {
            let s = &n.stats;
            println!(
                "  {:<16} mappings created {} expired {}, out {} in {}, filtered {}, udp-blocked {}, hairpinned {}, rst {}, icmp {}",
                n.name,
                s.mappings_created,
                s.mappings_expired,
                s.translated_out,
                s.translated_in,
                s.dropped_filter,
                s.dropped_blocked,
                s.hairpinned,
                s.rst_sent,
                s.icmp_translated
            );
        }
    }
    println!(
        "\nrouter: no route {}, ttl expired {}, not IPv4 {}, hairpin refused {}, host queue full {}",
        r.stats.no_route,
        r.stats.ttl_expired,
        r.stats.not_ipv4,
        r.stats.hairpin_refused,
        r.stats.tun_write_dropped
    );
}

fn up(path: &Path, name: Option<String>) -> Result<i32> {
    let s = load(path)?;
    let name = name.unwrap_or_else(|| {
        path.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "netsim".into())
    });
    become_root_if_needed()?;
    let (net, _) = start(&s, None)?;
    let mut hosts = BTreeMap::new();
    // Every host, including the helpers netsim adds (UPnP, STUN).
    let all = net.topology().clone();
    for h in all.hosts() {
        hosts.insert(
            net.host_name(h).to_owned(),
            HostState {
                netns: net.netns_path(h),
                addrs: net.host_addrs(h).to_vec(),
            },
        );
    }
    // Real Linux routers can be entered too (`netsim exec gw -- nft list ruleset`).
    for r in all.routers() {
        if let Some(netns) = net.router_netns_path(r) {
            let spec = all.router_spec(r);
            hosts.insert(
                spec.name.clone(),
                HostState {
                    netns,
                    addrs: vec![spec.wan_ip, spec.lan_ip()],
                },
            );
        }
    }
    let dir = state_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let file = dir.join(format!("{name}.json"));
    let state = UpState {
        pid: std::process::id(),
        hosts,
    };
    std::fs::write(&file, serde_json::to_vec_pretty(&state)?)
        .with_context(|| format!("writing {}", file.display()))?;
    let mut children = spawn_commands(&s, &net, false)?;
    println!(
        "netsim: network {name:?} is up (seed {}); Ctrl-C stops it",
        net.seed()
    );
    for (h, st) in &state.hosts {
        let addrs: Vec<String> = st.addrs.iter().map(|a| a.to_string()).collect();
        println!(
            "  {h:<16} {:<32} netsim exec {h} -- CMD   (or nsenter --net={})",
            addrs.join(","),
            st.netns.display()
        );
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    })?;
    for c in &mut children {
        let _ = c.2.kill();
        let _ = c.2.wait();
    }
    let _ = std::fs::remove_file(&file);
    let stats = net.shutdown();
    print_report(&Report {
        seed: s.seed,
        hosts: Vec::new(),
        stats,
    });
    Ok(0)
}

fn read_states(only: Option<&str>) -> Result<Vec<(String, UpState)>> {
    let dir = state_dir();
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(out);
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let name = p
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if only.is_some_and(|o| o != name) {
            continue;
        }
        let Ok(text) = std::fs::read(&p) else {
            continue;
        };
        let Ok(st) = serde_json::from_slice::<UpState>(&text) else {
            continue;
        };
        if !Path::new(&format!("/proc/{}", st.pid)).exists() {
            let _ = std::fs::remove_file(&p); // left by a network that died
            continue;
        }
        out.push((name, st));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn exec(host: &str, net: Option<&str>, command: &[String]) -> Result<i32> {
    let states = read_states(net)?;
    let found: Vec<_> = states
        .iter()
        .filter_map(|(_, st)| st.hosts.get(host).map(|h| (st.pid, h)))
        .collect();
    let (pid, h) = match found.as_slice() {
        [] => bail!("no running network has a host {host:?} (start one with `netsim up`)"),
        [one] => *one,
        _ => bail!("several networks have a host {host:?}; pick one with --net"),
    };
    // Open the namespace first: after joining a user namespace, /proc of the
    // outer world may no longer be ours to read.
    let netns =
        std::fs::File::open(&h.netns).with_context(|| format!("opening {}", h.netns.display()))?;
    netsim::join_user_namespace_of(pid).context("joining the network's user namespace")?;
    netsim::enter_netns_file(Path::new(&format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&netns)
    )))
    .with_context(|| format!("joining {}", h.netns.display()))?;
    let err = Command::new(&command[0])
        .args(&command[1..])
        .env("NETSIM_HOST", host)
        .exec();
    bail!("running {:?}: {err}", command[0])
}

fn list() -> Result<i32> {
    for (name, st) in read_states(None)? {
        println!("{name} (pid {})", st.pid);
        for (h, hs) in &st.hosts {
            let addrs: Vec<String> = hs.addrs.iter().map(|a| a.to_string()).collect();
            println!("  {h:<16} {}", addrs.join(","));
        }
    }
    Ok(0)
}
