//! The tc datapath's known failure, detected (vrnetlab issue 504: on some host kernels what tc
//! mirred redirects into a tap never reaches qemu): ethN's receive counter grows while the
//! tap's transmit counter (what qemu read) stays still, for a bounded time counted from when
//! the guest is seen alive on that port (it sends through the tap). An idle link, or a guest
//! still booting (it sends nothing yet, so qemu does not read yet), is never reported. Pure: fed with counter samples, says when to warn.

use std::time::{Duration, Instant};

/// How long frames must keep arriving on ethN without the tap delivering any before it is
/// reported.
pub const WINDOW: Duration = Duration::from_secs(10);
/// How often the watcher samples the counters.
pub const PERIOD: Duration = Duration::from_secs(2);
/// At least this many frames must enter ethN during the window.
const MIN_FRAMES: u64 = 3;

/// One sample of a wired port's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sample {
    /// Frames ethN received (each one redirected to the tap).
    pub eth_rx: u64,
    /// Frames the tap handed to qemu.
    pub tap_tx: u64,
    /// Frames qemu wrote into the tap (the guest is alive on this port).
    pub tap_rx: u64,
}

/// What changed for one port after a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Same,
    /// The symptom is there (report once).
    Stalled,
    /// The tap delivers again (clear the report).
    Delivering,
}

/// One port's watch.
#[derive(Debug, Default)]
pub struct Stall {
    last: Option<Sample>,
    /// Since when (and from which sample) frames arrive and the tap delivers none.
    since: Option<(Instant, Sample)>,
    pub stalled: bool,
}

impl Stall {
    /// A new start (ethN re-wired): forget the counters.
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    /// Feeds one sample taken at `now`.
    pub fn feed(&mut self, s: Sample, now: Instant) -> Verdict {
        let Some(last) = self.last.replace(s) else {
            return Verdict::Same;
        };
        if s.tap_tx != last.tap_tx || s.eth_rx < last.eth_rx {
            // Delivering (or the counters were reset): no symptom.
            self.since = None;
            if std::mem::take(&mut self.stalled) {
                return Verdict::Delivering;
            }
            return Verdict::Same;
        }
        // The window opens when frames arrive while the guest sends (it is up: qemu reads).
        if self.since.is_none() && s.eth_rx > last.eth_rx && s.tap_rx > last.tap_rx {
            self.since = Some((now, last));
        }
        let Some((t0, s0)) = self.since else {
            return Verdict::Same;
        };
        let symptom = now.duration_since(t0) >= WINDOW && s.eth_rx - s0.eth_rx >= MIN_FRAMES;
        if symptom && !self.stalled {
            self.stalled = true;
            return Verdict::Stalled;
        }
        Verdict::Same
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(eth_rx: u64, tap_tx: u64, tap_rx: u64) -> Sample {
        Sample {
            eth_rx,
            tap_tx,
            tap_rx,
        }
    }

    /// Feeds samples `PERIOD` apart; the verdicts.
    fn run(samples: &[Sample]) -> Vec<Verdict> {
        let t = Instant::now();
        let mut st = Stall::default();
        (samples.iter().enumerate())
            .map(|(i, x)| st.feed(*x, t + PERIOD * i as u32))
            .collect()
    }

    #[test]
    fn frames_in_nothing_delivered_while_the_guest_sends_is_reported_once() {
        let v = run(&[
            s(0, 0, 0),
            s(2, 0, 1),
            s(4, 0, 2),
            s(6, 0, 3),
            s(8, 0, 4),
            s(10, 0, 5),
            s(12, 0, 6),
            s(14, 0, 7),
        ]);
        assert_eq!(v.iter().filter(|x| **x == Verdict::Stalled).count(), 1);
        // Not before the window is over.
        assert_eq!(v[..6].iter().filter(|x| **x != Verdict::Same).count(), 0);
        assert_eq!(v[6], Verdict::Stalled);
    }

    #[test]
    fn an_idle_link_a_booting_guest_and_a_working_tap_are_never_reported() {
        let idle = run(&[s(5, 5, 5); 20]);
        let booting: Vec<Sample> = (0..20).map(|i| s(i * 3, 0, 0)).collect();
        let working: Vec<Sample> = (0..20).map(|i| s(i * 3, i * 3, i)).collect();
        for v in [idle, run(&booting), run(&working)] {
            assert!(v.iter().all(|x| *x == Verdict::Same), "{v:?}");
        }
    }

    #[test]
    fn delivery_clears_the_report() {
        let mut v: Vec<Sample> = (0..8).map(|i| s(i * 2, 0, i)).collect();
        v.push(s(20, 1, 9));
        let r = run(&v);
        assert_eq!(r.last(), Some(&Verdict::Delivering));
        assert!(r.contains(&Verdict::Stalled));
    }
}
