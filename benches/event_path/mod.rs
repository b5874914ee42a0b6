//! The event path, measured honestly (issue 17 item 9): from the moment a netlink listener of
//! our own (its own socket, its own thread) receives the kernel's RTM_NEWLINK for a new ethN,
//! to the moment the launcher's link watcher logs "wired" (both filters read back). The
//! process that adds the link is not in the figure. The watcher is the launcher's own
//! `DataLinks` (the code `launcher run` keeps running), in a throwaway namespace, no qemu.
//! Figures printed, not asserted. The listener runs at a real-time priority (SCHED_FIFO, when
//! allowed) so its receive time stays close to the kernel's event on a loaded machine; a link
//! the listener heard of only after the watcher had wired it counts with its negative time
//! (said how many), never as zero.

use launcher::config::DataLink;
use launcher::net::{DataLinks, LinkEvent, LinkEvents, LinkTable, Slot};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::SubscriberExt;

/// ifindex -> when it happened.
type Stamps = Arc<Mutex<HashMap<u32, Instant>>>;

/// Notes when the watcher logs "wired" for an ifindex, and (in the list) how long the wiring
/// itself took by the watcher's own clock (its `us` field, ms).
struct Wired(Stamps, Arc<Mutex<Vec<f64>>>);

#[derive(Default)]
struct Fields {
    message: String,
    ifindex: Option<u32>,
    us: Option<u64>,
}

impl Visit for Fields {
    fn record_u64(&mut self, f: &Field, v: u64) {
        if f.name() == "ifindex" {
            self.ifindex = Some(v as u32);
        }
        if f.name() == "us" {
            self.us = Some(v);
        }
    }
    fn record_debug(&mut self, f: &Field, v: &dyn std::fmt::Debug) {
        if f.name() == "message" {
            self.message = format!("{v:?}");
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Wired {
    fn on_event(&self, ev: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let at = Instant::now();
        let mut f = Fields::default();
        ev.record(&mut f);
        if let (true, Some(i)) = (f.message == "wired", f.ifindex) {
            self.0.lock().unwrap().entry(i).or_insert(at);
            self.1
                .lock()
                .unwrap()
                .extend(f.us.map(|us| us as f64 / 1e3));
        }
    }
}

/// This thread at real-time priority 1 (SCHED_FIFO); whether it took.
fn realtime() -> bool {
    let p = libc::sched_param { sched_priority: 1 };
    // SAFETY: pthread_self names this thread; `p` lives across the call.
    unsafe { libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_FIFO, &p) == 0 }
}

/// Our own listener: when each link named `{prefix}N` first appears (by ifindex).
fn listen(prefix: &'static str, appeared: Stamps) {
    std::thread::spawn(move || {
        if !realtime() {
            println!("  (the listener could not take SCHED_FIFO: its receive time may lag)");
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut ev = LinkEvents::subscribe(None).unwrap();
            while let Ok(e) = ev.next().await {
                if let LinkEvent::New(li) = e {
                    if li.name.starts_with(prefix) {
                        let at = Instant::now();
                        appeared.lock().unwrap().entry(li.index).or_insert(at);
                    }
                }
            }
        });
    });
}

/// This thread's CPU time (user + system), in ms: the work done, whatever the machine's load.
fn thread_cpu_ms() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec the call writes into; no other pointer is passed.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 * 1e3 + t.tv_nsec as f64 / 1e6
}

/// A link watcher over `n` spare slots `{eth}K` <-> `{tap}K` (K = 1..n) in its own thread;
/// stop it by sending on (or dropping) the sender, then its CPU time while watching (ms)
/// comes on the receiver.
fn watcher(
    eth: &str,
    tap: &str,
    n: u32,
) -> (std::sync::mpsc::Sender<()>, std::sync::mpsc::Receiver<f64>) {
    let slots: Vec<Slot> = (1..=n)
        .map(|k| Slot {
            link: DataLink {
                index: k,
                eth: format!("{eth}{k}"),
                tap: format!("{tap}{k}"),
            },
            queues: 1,
            spare: true,
        })
        .collect();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let (cpu_tx, cpu_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let table: LinkTable = Default::default();
            let mode = launcher::config::ConnectionMode::Tc;
            let dl = DataLinks::new(&slots, 1500, None, table, mode)
                .await
                .unwrap();
            let cpu0 = thread_cpu_ms();
            ready_tx.send(()).unwrap();
            let stop = tokio::task::spawn_blocking(move || {
                let _ = stop_rx.recv();
            });
            tokio::select! {
                _ = dl.watch() => {}
                _ = stop => {}
            }
            let _ = cpu_tx.send(thread_cpu_ms() - cpu0);
        });
    });
    ready_rx.recv().unwrap();
    (stop_tx, cpu_rx)
}

/// `to - from` in ms, negative when `to` came first.
fn signed_ms(from: Instant, to: Instant) -> f64 {
    match to.checked_duration_since(from) {
        Some(d) => d.as_secs_f64() * 1e3,
        None => -(from - to).as_secs_f64() * 1e3,
    }
}

fn pct(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Waits (bounded) until every ifindex appeared (named `prefix*`) is wired; per link, the
/// appeared -> wired times (ms), the first appearance -> last wiring (ms), and the first
/// appearance -> last appearance (ms: how long the adding process took, a floor of the total).
fn settle(appeared: &Stamps, wired: &Stamps, want: usize) -> (Vec<f64>, f64, f64) {
    let t = Instant::now();
    loop {
        let (a, w) = (
            appeared.lock().unwrap().clone(),
            wired.lock().unwrap().clone(),
        );
        if a.len() >= want && a.keys().all(|i| w.contains_key(i)) {
            let per: Vec<f64> = a.iter().map(|(i, at)| signed_ms(*at, w[i])).collect();
            let first = a.values().min().unwrap();
            let last = a.keys().map(|i| w[i]).max().unwrap();
            let last_in = a.values().max().unwrap();
            return (per, signed_ms(*first, last), signed_ms(*first, *last_in));
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "links not wired: {a:?} {w:?}"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Runs in a thread of its own, moved into a throwaway namespace (the caller's stays put).
pub fn run(ns: &str) {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        let f = std::fs::File::open(format!("/var/run/netns/{ns}")).unwrap();
        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let wired: Stamps = Default::default();
        let own: Arc<Mutex<Vec<f64>>> = Default::default();
        let sub = tracing_subscriber::registry().with(Wired(wired.clone(), own.clone()));
        let _g = tracing::subscriber::set_global_default(sub);
        let ip = |args: &str| super::lab::must(&format!("ip -n {ns} {args}"));
        let batch = |lines: String| {
            let p = std::env::temp_dir().join(format!("{ns}.batch"));
            std::fs::write(&p, lines).unwrap();
            super::lab::must(&format!("ip -n {ns} -batch {}", p.display()));
        };

        // One link at a time, re-created: its ifindex is new each time.
        let (stop, cpu) = watcher("eth", "tap", 1);
        let appeared: Stamps = Default::default();
        listen("eth", appeared.clone());
        let mut per = Vec::new();
        for _ in 0..200 {
            appeared.lock().unwrap().clear();
            ip("link add p1 type veth peer name eth1");
            per.extend(settle(&appeared, &wired, 1).0);
            ip("link del p1");
            std::thread::sleep(Duration::from_millis(5));
        }
        let wiring = std::mem::take(&mut *own.lock().unwrap());
        println!(
            "  of which the wiring itself (set up, both filters, read back; the watcher's own clock): median {:.3} ms, p90 {:.3} ms",
            pct(&wiring, 0.5), pct(&wiring, 0.9)
        );
        drop(stop);
        let cpu = cpu.recv().unwrap() / per.len() as f64;
        println!(
            "link appears -> wired (from our listener's receive, both filters read back): median {:.3} ms, p90 {:.3} ms, min {:.3} ms, max {:.3} ms over {} ({} heard by the listener only after they were wired)",
            pct(&per, 0.5), pct(&per, 0.9), pct(&per, 0.0), pct(&per, 1.0), per.len(),
            per.iter().filter(|&&v| v < 0.0).count()
        );
        println!("  the watcher's CPU time (user + system) per link, deletion included: {cpu:.3} ms");

        // 64 links in one go (one `ip -batch`), ten times.
        let (stop, cpu) = watcher("eb", "tb", 64);
        let appeared: Stamps = Default::default();
        listen("eb", appeared.clone());
        let (mut totals, mut all, mut adding) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..10 {
            appeared.lock().unwrap().clear();
            batch((1..=64).map(|k| format!("link add pb{k} type veth peer name eb{k}\n")).collect());
            let (per, total, add) = settle(&appeared, &wired, 64);
            totals.push(total);
            adding.push(add);
            all.extend(per);
            batch((1..=64).map(|k| format!("link del pb{k}\n")).collect());
            std::thread::sleep(Duration::from_millis(50));
        }
        println!(
            "64 links in one go: first appears -> last wired median {:.2} ms (min {:.2}, max {:.2}) over 10; per link median {:.3} ms, p90 {:.3} ms",
            pct(&totals, 0.5), pct(&totals, 0.0), pct(&totals, 1.0), pct(&all, 0.5), pct(&all, 0.9)
        );
        println!(
            "  of which the links appearing (ip -batch adding them, first -> last seen by the listener): median {:.2} ms",
            pct(&adding, 0.5)
        );
        drop(stop);
        let cpu = cpu.recv().unwrap() / 10.0;
        println!("  the watcher's CPU time per 64 links (wiring and deletion): {cpu:.2} ms");
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        println!("  (load average {}; wall-clock figures swing with it)", load.trim());
    })
    .join()
    .unwrap();
}
