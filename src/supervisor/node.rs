//! The node's VMs as one: started in order (each once the one before runs), stopped in the
//! reverse order (one at a time, gracefully; "quit now" reaches all at once), and the node's
//! exit code. The decisions are the pure [`Sequencer`] (events in, commands out); [`drive`]
//! is its small async driver. Never spawns qemu itself (each VM's life does).

use super::qemu_run::StopLevel;
use super::reaper::Signals;
use super::vm::{self, Vm};
use crate::exit::Code;
use crate::state::{NodeState, State};
use std::time::Instant;
use tokio::sync::{mpsc, watch};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// VM i's guest runs (its state is running or ready).
    VmRunning(usize),
    /// VM i's life ended with this code.
    VmEnded(usize, Code),
    /// A stop signal, by name.
    Signal(&'static str),
}

/// What to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Start VM i's life.
    Start(usize),
    /// Tell VM i to stop at this level.
    Stop(usize, StopLevel),
    /// VM i was never started and never will be: it goes stopping, then stopped.
    NeverStarted(usize),
    /// Every VM has ended: the node exits with this code.
    Exit(Code),
}

/// The pure sequencer of a node of `n` VMs.
#[derive(Debug)]
pub struct Sequencer {
    n: usize,
    /// VMs started so far (they start in index order).
    started: usize,
    /// Started and not yet ended.
    live: Vec<bool>,
    /// Reported running at least once.
    ran: Vec<bool>,
    /// What each VM was told.
    told: Vec<StopLevel>,
    /// From the stop signals: run, then graceful, then now.
    level: StopLevel,
    /// The first VM to end on its own ends the node; its code is the node's.
    verdict: Option<Code>,
    /// The first non-zero end, for a node stopped by a signal.
    first_failure: Option<Code>,
    done: bool,
}

impl Sequencer {
    pub fn new(n: usize) -> Self {
        Self {
            n,
            started: 0,
            live: vec![false; n],
            ran: vec![false; n],
            told: vec![StopLevel::Run; n],
            level: StopLevel::Run,
            verdict: None,
            first_failure: None,
            done: false,
        }
    }

    /// The node is stopping (a signal came, or a VM ended on its own).
    pub fn stopping(&self) -> bool {
        self.level.is_stop() || self.verdict.is_some()
    }

    /// The first commands: start VM 0.
    pub fn start(&mut self) -> Vec<Command> {
        self.next()
    }

    pub fn on(&mut self, e: Event) -> Vec<Command> {
        match e {
            Event::VmRunning(i) => self.ran[i] = true,
            Event::VmEnded(i, code) => {
                self.live[i] = false;
                if !self.stopping() {
                    self.verdict = Some(code);
                }
                if !code.is_ok() && self.first_failure.is_none() {
                    self.first_failure = Some(code);
                }
            }
            Event::Signal(s) => {
                self.level = match self.level {
                    StopLevel::Run => StopLevel::Graceful(s),
                    _ => StopLevel::Now(s),
                };
            }
        }
        self.next()
    }

    fn next(&mut self) -> Vec<Command> {
        let mut out = Vec::new();
        if self.done {
            return out;
        }
        // Start the next VM once the one before runs.
        while !self.stopping()
            && self.started < self.n
            && (self.started == 0 || self.ran[self.started - 1])
        {
            self.live[self.started] = true;
            out.push(Command::Start(self.started));
            self.started += 1;
        }
        let any_live = self.live.contains(&true);
        if !any_live && (self.stopping() || self.started == self.n) {
            out.extend((self.started..self.n).map(Command::NeverStarted));
            out.push(Command::Exit(
                self.verdict.or(self.first_failure).unwrap_or(Code::Ok),
            ));
            self.done = true;
            return out;
        }
        if self.stopping() {
            // Stop in the reverse order: the last VM still live first; "quit now" reaches all.
            let want = match self.level {
                StopLevel::Run => StopLevel::Graceful("the node is stopping"),
                l => l,
            };
            for i in (0..self.n).rev().filter(|&i| self.live[i]) {
                if self.told[i].rank() < want.rank() {
                    self.told[i] = want;
                    out.push(Command::Stop(i, want));
                }
                if want.rank() < StopLevel::Now("").rank() {
                    break;
                }
            }
        }
        out
    }
}

/// Runs the node's VMs to the end: the sequencer's commands carried out, the VMs' ends, their
/// state changes and the stop signals fed back to it. Returns the node's exit code, and
/// whether VM `install` (when given) became ready: its readiness stops the node.
pub async fn drive(
    vms: Vec<Vm>,
    state: &NodeState,
    signals: &mut Signals,
    t0: Instant,
    mut suspend: Option<super::suspend::Suspend>,
    install: Option<usize>,
) -> (Code, bool) {
    let mut installed = false;
    let n = vms.len();
    let multi = n > 1;
    let mut pending: Vec<Option<Vm>> = vms.into_iter().map(Some).collect();
    let stops: Vec<watch::Sender<StopLevel>> =
        (0..n).map(|_| watch::channel(StopLevel::Run).0).collect();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(usize, Code)>();
    let mut changed = state.changed();
    let mut seq = Sequencer::new(n);
    let mut cmds = seq.start();
    loop {
        for c in cmds.drain(..) {
            match c {
                Command::Start(i) => {
                    if i == 0 {
                        tracing::info!(
                            since_start_ms = t0.elapsed().as_millis() as u64,
                            "starting qemu"
                        );
                    }
                    let vm = pending[i].take().expect("each VM starts once");
                    let (stop, tx) = (stops[i].subscribe(), done_tx.clone());
                    tokio::spawn(async move {
                        let _ = tx.send((i, vm::life(vm, stop).await));
                    });
                }
                Command::Stop(i, level) => {
                    stops[i].send_replace(level);
                }
                Command::NeverStarted(i) => {
                    let vm = state.vm(i);
                    let why = "the node stopped before this VM started";
                    vm.advance(State::Stopping, why);
                    vm.advance(State::Stopped, why);
                }
                Command::Exit(code) => return (code, installed),
            }
        }
        tokio::select! {
            s = signals.stop() => {
                tracing::info!(signal = s, "stop signal");
                // Suspend on stop (opt-in): the first signal saves the node and its qemus quit
                // (exit 0): their ends, not the signal, end the node. Failed: a usual stop.
                if let Some(sus) = suspend.take() {
                    if sus.run().await {
                        continue;
                    }
                }
                cmds = seq.on(Event::Signal(s));
            }
            Some((i, code)) = done_rx.recv() => {
                if multi && !seq.stopping() {
                    tracing::info!(vm = i, code = code.as_i32(), "a VM ended: stopping the node");
                }
                cmds = seq.on(Event::VmEnded(i, code));
            }
            _ = changed.changed() => {
                for i in 0..n {
                    if matches!(state.vm(i).state(), State::Running | State::Ready) {
                        cmds.extend(seq.on(Event::VmRunning(i)));
                    }
                }
                if !installed && install.is_some_and(|i| state.vm(i).state() == State::Ready) {
                    installed = true;
                    tracing::info!("install steps finished: powering the node off");
                    cmds.extend(seq.on(Event::Signal("install finished")));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Command::*;
    use Event::*;

    const NODE: StopLevel = StopLevel::Graceful("the node is stopping");

    #[test]
    fn a_single_vm_starts_and_its_end_is_the_node_s() {
        let mut s = Sequencer::new(1);
        assert_eq!(s.start(), [Start(0)]);
        assert_eq!(s.on(VmRunning(0)), []);
        assert_eq!(s.on(VmEnded(0, Code::Guest(137))), [Exit(Code::Guest(137))]);
        assert_eq!(s.on(Signal("SIGTERM")), [], "nothing after the exit");
    }

    #[test]
    fn a_single_vm_stopped_by_a_signal_exits_with_its_code() {
        let mut s = Sequencer::new(1);
        s.start();
        assert_eq!(
            s.on(Signal("SIGTERM")),
            [Stop(0, StopLevel::Graceful("SIGTERM"))]
        );
        assert_eq!(s.on(VmEnded(0, Code::Ok)), [Exit(Code::Ok)]);
    }

    #[test]
    fn two_vms_start_in_order_and_stop_in_reverse() {
        let mut s = Sequencer::new(2);
        assert_eq!(s.start(), [Start(0)]);
        assert_eq!(s.on(VmRunning(1)), [], "a VM not started is ignored");
        assert_eq!(s.on(VmRunning(0)), [Start(1)]);
        assert_eq!(s.on(VmRunning(0)), [], "started once");
        let sig = StopLevel::Graceful("SIGTERM");
        assert_eq!(s.on(Signal("SIGTERM")), [Stop(1, sig)], "the last first");
        assert_eq!(s.on(VmRunning(1)), []);
        assert_eq!(s.on(VmEnded(1, Code::Ok)), [Stop(0, sig)]);
        assert_eq!(s.on(VmEnded(0, Code::Ok)), [Exit(Code::Ok)]);
    }

    #[test]
    fn a_signal_during_the_ordered_start_leaves_the_rest_unstarted() {
        let mut s = Sequencer::new(3);
        s.start();
        let sig = StopLevel::Graceful("SIGINT");
        assert_eq!(s.on(Signal("SIGINT")), [Stop(0, sig)]);
        assert_eq!(s.on(VmRunning(0)), [], "no start once stopping");
        assert_eq!(
            s.on(VmEnded(0, Code::Ok)),
            [NeverStarted(1), NeverStarted(2), Exit(Code::Ok)]
        );
    }

    #[test]
    fn a_second_signal_reaches_every_live_vm_at_once() {
        let mut s = Sequencer::new(3);
        s.start();
        s.on(VmRunning(0));
        s.on(VmRunning(1));
        assert_eq!(
            s.on(Signal("SIGTERM")),
            [Stop(2, StopLevel::Graceful("SIGTERM"))]
        );
        let now = StopLevel::Now("SIGINT");
        assert_eq!(
            s.on(Signal("SIGINT")),
            [Stop(2, now), Stop(1, now), Stop(0, now)]
        );
        assert_eq!(s.on(Signal("SIGINT")), [], "told once");
        assert_eq!(s.on(VmEnded(1, Code::Ok)), []);
        assert_eq!(s.on(VmEnded(2, Code::Guest(137))), []);
        assert_eq!(s.on(VmEnded(0, Code::Ok)), [Exit(Code::Guest(137))]);
    }

    #[test]
    fn a_vm_failing_stops_the_others_in_reverse_and_sets_the_code() {
        let mut s = Sequencer::new(3);
        s.start();
        s.on(VmRunning(0));
        s.on(VmRunning(1));
        assert_eq!(
            s.on(VmEnded(1, Code::Guest(137))),
            [Stop(2, NODE)],
            "the last live VM first"
        );
        assert_eq!(s.on(VmEnded(2, Code::Ok)), [Stop(0, NODE)]);
        // A signal now: graceful is no more than what VM 0 was told.
        assert_eq!(s.on(Signal("SIGTERM")), []);
        assert_eq!(
            s.on(VmEnded(0, Code::Guest(1))),
            [Exit(Code::Guest(137))],
            "the verdict's code, not a later failure's"
        );
    }

    #[test]
    fn a_vm_failing_during_the_ordered_start() {
        let mut s = Sequencer::new(2);
        s.start();
        assert_eq!(
            s.on(VmEnded(0, Code::Failure)),
            [NeverStarted(1), Exit(Code::Failure)]
        );
    }

    #[test]
    fn a_guest_powering_itself_off_ends_the_node_with_0() {
        let mut s = Sequencer::new(2);
        s.start();
        s.on(VmRunning(0));
        assert_eq!(s.on(VmEnded(0, Code::Ok)), [Stop(1, NODE)]);
        assert_eq!(s.on(VmEnded(1, Code::Ok)), [Exit(Code::Ok)]);
    }

    #[test]
    fn stopped_by_a_signal_the_first_failure_is_the_code() {
        let mut s = Sequencer::new(2);
        s.start();
        s.on(VmRunning(0));
        s.on(Signal("SIGTERM"));
        s.on(VmEnded(1, Code::Guest(3)));
        assert_eq!(s.on(VmEnded(0, Code::Guest(4))), [Exit(Code::Guest(3))]);
    }
}
