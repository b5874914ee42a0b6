//! The fd numbers qemu gets its taps at: one [`FdLayout`] per VM answers both the argv
//! (`fd=`/`fds=` of each `-netdev`) and the spawn (which open fd goes to which number), so the
//! two cannot disagree. Pure: it never opens, dups or closes an fd.
//!
//! The layout: internal-network tap k at 3 + k (k < [`MAX_INTERNAL`]), the passthrough
//! management tap at 9, then the data taps from 10 on, link by link in the plan's link order,
//! each link's queues in a row.
//!
//! The open-file limit follows from the layouts too ([`nofile_needed`]): where the spawn parks
//! the fds before moving them ([`park_from`]) and how many the launcher and qemu hold.

use super::accel::Launch;
use crate::config::{DataLink, Management, VmPlan, MAX_INTERNAL};
use std::ops::Range;
use std::os::fd::RawFd;

/// Internal-network tap k is handed to qemu at this + k.
const INTERNAL_BASE: i32 = 3;
/// The management tap's number in passthrough mode.
const MGMT: i32 = 9;
/// The first data tap's number.
const DATA_BASE: i32 = 10;
const _: () = assert!(INTERNAL_BASE + MAX_INTERNAL as i32 <= MGMT);

/// Files the launcher keeps open besides the taps, whatever the node: stdio, the runtime,
/// netlink sockets, the control socket and its clients. Generous on purpose.
const LAUNCHER_OWN: u64 = 64;
/// And per VM: its consoles (socket, log, telnet listener and clients), QMP, probes.
const LAUNCHER_PER_VM: u64 = 32;
/// What qemu opens of its own (disks, sockets, eventfds of the other devices).
const QEMU_OWN: u64 = 64;
/// What qemu opens per data tap with vhost-net: the vhost device and, per virtqueue of the
/// queue pair, a kick and a call eventfd. Without vhost-net (TCG), nothing per tap.
const QEMU_PER_VHOST_TAP: u64 = 5;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FdError {
    #[error("management tap: the layout expects {expected}, {given} given")]
    Mgmt { expected: usize, given: usize },
    #[error("internal taps: the layout expects {expected}, {given} given")]
    Internal { expected: usize, given: usize },
    #[error("data links: the layout expects {expected}, {given} given")]
    Links { expected: usize, given: usize },
    #[error("data link {pos}: the layout expects {expected} queue taps, {given} given")]
    Queues {
        pos: usize,
        expected: usize,
        given: usize,
    },
}

/// Every fd number one VM's qemu gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdLayout {
    internal: usize,
    passthrough: bool,
    /// Per data link (in link order), the numbers of its queue taps.
    data: Vec<Range<i32>>,
}

impl FdLayout {
    /// The layout for `internal` internal-network taps, a passthrough management tap or not,
    /// and data links with these queue counts (in link order). Panics past [`MAX_INTERNAL`]
    /// internal taps (config refuses more) or with a link of 0 queues.
    pub fn new(internal: usize, passthrough: bool, queues: &[u32]) -> Self {
        assert!(
            internal <= MAX_INTERNAL,
            "at most {MAX_INTERNAL} internal taps"
        );
        let mut next = DATA_BASE;
        let data = queues
            .iter()
            .map(|&q| {
                assert!(q > 0, "a data link has at least one queue");
                let r = next..next + q as i32;
                next = r.end;
                r
            })
            .collect();
        FdLayout {
            internal,
            passthrough,
            data,
        }
    }

    /// The layout of one VM of a plan, launched so, with these data links (the plan's, or
    /// those present at start).
    pub fn of(plan: &VmPlan, launch: &Launch, links: &[DataLink]) -> Self {
        FdLayout::new(
            plan.internal.len(),
            matches!(plan.management, Management::Passthrough { .. }),
            &vec![launch.queues; links.len()],
        )
    }

    /// The passthrough management tap's number (bound only in passthrough mode).
    pub fn mgmt(&self) -> i32 {
        MGMT
    }

    /// Internal-network tap k's number.
    pub fn internal(&self, k: usize) -> i32 {
        debug_assert!(k < self.internal);
        INTERNAL_BASE + k as i32
    }

    /// The numbers of the queue taps of the data link at position `pos` (in link order).
    pub fn data(&self, pos: usize) -> Range<i32> {
        self.data[pos].clone()
    }

    /// The `-netdev tap` fd argument of data link `pos`: "fd=10", or "fds=10:11:12:13" with
    /// several queues.
    pub fn netdev_fd_arg(&self, pos: usize) -> String {
        let r = self.data(pos);
        if r.len() == 1 {
            format!("fd={}", r.start)
        } else {
            let list: Vec<String> = r.map(|n| n.to_string()).collect();
            format!("fds={}", list.join(":"))
        }
    }

    /// The highest number handed to qemu (2, stderr, when there is none).
    pub fn max_fd(&self) -> i32 {
        let data = self.data.last().map(|r| r.end - 1);
        let mgmt = self.passthrough.then_some(MGMT);
        let internal = self.internal.checked_sub(1).map(|k| self.internal(k));
        data.or(mgmt).or(internal).unwrap_or(2)
    }

    /// How many fds qemu is handed.
    pub fn count(&self) -> usize {
        self.internal + self.passthrough as usize + self.data.iter().map(|r| r.len()).sum::<usize>()
    }

    /// Pairs each open fd with its number: the management tap (passthrough only), the
    /// internal-network taps in order, and per data link (in link order) its queue taps.
    /// Errs when the counts disagree with the layout.
    pub fn bind(
        &self,
        mgmt: Option<RawFd>,
        internal: &[RawFd],
        data: &[Vec<RawFd>],
    ) -> Result<Vec<(i32, RawFd)>, FdError> {
        if mgmt.is_some() != self.passthrough {
            return Err(FdError::Mgmt {
                expected: self.passthrough as usize,
                given: mgmt.is_some() as usize,
            });
        }
        if internal.len() != self.internal {
            return Err(FdError::Internal {
                expected: self.internal,
                given: internal.len(),
            });
        }
        if data.len() != self.data.len() {
            return Err(FdError::Links {
                expected: self.data.len(),
                given: data.len(),
            });
        }
        let mut out: Vec<(i32, RawFd)> = mgmt.map(|fd| (MGMT, fd)).into_iter().collect();
        for (pos, (taps, range)) in data.iter().zip(&self.data).enumerate() {
            if taps.len() != range.len() {
                return Err(FdError::Queues {
                    pos,
                    expected: range.len(),
                    given: taps.len(),
                });
            }
            out.extend(range.clone().zip(taps.iter().copied()));
        }
        out.extend(
            internal
                .iter()
                .enumerate()
                .map(|(k, &fd)| (self.internal(k), fd)),
        );
        Ok(out)
    }
}

/// Where the spawn parks copies of `bound`'s fds (`(number, fd)` pairs) before moving them to
/// their numbers: just above the highest number, so no parked copy sits on a number some fd
/// is later moved to (`dup2` there would close the copy before it is moved itself). Never a
/// fixed high number: under a soft RLIMIT_NOFILE of 1024 (Docker's and a login shell's
/// default) `F_DUPFD` from 1024 fails, and fds above the limit cannot exist.
pub fn park_from(bound: &[(i32, RawFd)]) -> RawFd {
    bound.iter().map(|&(n, _)| n).max().unwrap_or(2) + 1
}

/// The RLIMIT_NOFILE a node needs, from each VM's layout and whether its data taps use
/// vhost-net: the most of what the launcher needs while it spawns any VM's qemu (every tap of
/// every VM open, its own files, and that VM's parked copies above its highest number) and
/// what each qemu needs (its numbers, its own files, vhost-net's per tap).
pub fn nofile_needed(vms: &[(FdLayout, bool)]) -> u64 {
    let taps: u64 = vms.iter().map(|(l, _)| l.count() as u64).sum();
    let launcher_own = LAUNCHER_OWN + LAUNCHER_PER_VM * vms.len() as u64;
    let per_vm = vms.iter().map(|(l, vhost)| {
        let (top, n) = (l.max_fd() as u64 + 1, l.count() as u64);
        let data = l.data.iter().map(|r| r.len() as u64).sum::<u64>();
        let launcher = top + taps + launcher_own + n;
        let qemu = top + QEMU_OWN + if *vhost { QEMU_PER_VHOST_TAP * data } else { 0 };
        launcher.max(qemu)
    });
    per_vm.max().unwrap_or(LAUNCHER_OWN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_as_before() {
        // Two internal taps, passthrough, three links of 4 queues: 3, 4; 9; 10.. in fours.
        let l = FdLayout::new(2, true, &[4, 4, 4]);
        assert_eq!((l.internal(0), l.internal(1), l.mgmt()), (3, 4, 9));
        assert_eq!(l.data(0), 10..14);
        assert_eq!(l.data(2), 18..22);
        assert_eq!(l.netdev_fd_arg(1), "fds=14:15:16:17");
        assert_eq!(l.max_fd(), 21);
        let one = FdLayout::new(0, false, &[1, 1]);
        assert_eq!(one.netdev_fd_arg(0), "fd=10");
        assert_eq!(one.netdev_fd_arg(1), "fd=11");
        assert_eq!(FdLayout::new(0, false, &[]).max_fd(), 2);
        assert_eq!(FdLayout::new(3, false, &[]).max_fd(), 5);
        assert_eq!(FdLayout::new(3, true, &[]).max_fd(), 9);
    }

    #[test]
    fn parking_starts_above_every_number() {
        let l = FdLayout::new(1, true, &[2, 1]);
        let bound = l.bind(Some(50), &[60], &[vec![11, 10], vec![12]]).unwrap();
        assert_eq!(park_from(&bound), l.max_fd() + 1);
        assert_eq!(park_from(&bound), 13);
        assert_eq!(park_from(&[]), 3);
        assert_eq!(l.count(), 5);
    }

    #[test]
    fn the_open_file_limit_counts_every_tap_and_vhost() {
        // One link, one queue, TCG: far below Docker's 1024.
        let one = FdLayout::new(0, false, &[1]);
        assert_eq!(one.count(), 1);
        assert_eq!(nofile_needed(&[(one.clone(), false)]), 11 + 1 + 64 + 32 + 1);
        // 60 links of 4 queues: 240 taps at 10..250; the launcher holds them all and parks
        // 240 copies above 249; qemu with vhost-net adds 5 per tap.
        let big = FdLayout::new(0, false, &[4; 60]);
        assert_eq!(nofile_needed(&[(big.clone(), false)]), 250 + 240 + 96 + 240);
        assert_eq!(nofile_needed(&[(big.clone(), true)]), 250 + 64 + 5 * 240);
        // Two VMs: the launcher holds both VMs' taps while it spawns either.
        let two = nofile_needed(&[(one.clone(), false), (big, false)]);
        assert_eq!(two, 250 + 241 + 64 + 64 + 240);
        assert_eq!(nofile_needed(&[]), 64);
    }

    #[test]
    fn bind_pairs_in_order() {
        let l = FdLayout::new(1, true, &[2, 1]);
        let got = l.bind(Some(50), &[60], &[vec![70, 71], vec![80]]).unwrap();
        assert_eq!(got, vec![(9, 50), (10, 70), (11, 71), (12, 80), (3, 60)]);
    }

    #[test]
    fn bind_refuses_counts_that_disagree() {
        let l = FdLayout::new(1, false, &[2]);
        assert_eq!(
            l.bind(Some(5), &[6], &[vec![7, 8]]),
            Err(FdError::Mgmt {
                expected: 0,
                given: 1
            })
        );
        assert!(matches!(
            l.bind(None, &[], &[vec![7, 8]]),
            Err(FdError::Internal { .. })
        ));
        assert!(matches!(
            l.bind(None, &[6], &[]),
            Err(FdError::Links { .. })
        ));
        assert_eq!(
            l.bind(None, &[6], &[vec![7]]),
            Err(FdError::Queues {
                pos: 0,
                expected: 2,
                given: 1
            })
        );
    }
}
