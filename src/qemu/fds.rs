//! The fd numbers qemu gets its taps (and their vhost-net devices) at: one [`FdLayout`] per VM
//! answers both the argv (`fd=`/`fds=` and `vhostfd=`/`vhostfds=` of each `-netdev`) and the
//! spawn (which open fd goes to which number, which numbers get a fresh /dev/vhost-net), so the
//! two cannot disagree. Pure: it never opens, dups or closes an fd.
//!
//! The layout: internal-network tap k at 3 + k (k < [`MAX_INTERNAL`]), the passthrough
//! management tap at 9, then the data taps from 10 on, link by link in the plan's link order,
//! each link's queues in a row; with vhost-net, right after the last data tap one vhost-net fd
//! per data tap queue, in the same order; last, the guest RAM's memfd ([`FdLayout::ram`]).
//! Only the data taps use vhost-net (management and internal taps run in qemu's userspace).
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
/// What qemu opens per data tap queue with vhost-net: per virtqueue of the queue pair, a kick
/// and a call eventfd (the vhost-net device itself is handed to it, one of its numbers).
/// Without vhost-net (TCG), nothing per tap.
const QEMU_PER_VHOST_TAP: u64 = 4;

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
    /// Per data link, the numbers of its queues' vhost-net fds; empty without vhost-net.
    vhost: Vec<Range<i32>>,
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
            vhost: Vec::new(),
        }
    }

    /// The same layout with (`on`) one vhost-net fd per data tap queue, numbered right after
    /// the last data tap, link by link.
    pub fn with_vhost(mut self, on: bool) -> Self {
        self.vhost = if on {
            let shift = self.data.last().map_or(0, |r| r.end - DATA_BASE);
            self.data
                .iter()
                .map(|r| r.start + shift..r.end + shift)
                .collect()
        } else {
            Vec::new()
        };
        self
    }

    /// The layout of one VM of a plan, launched so, with these data links (the plan's, or
    /// those present at start).
    pub fn of(plan: &VmPlan, launch: &Launch, links: &[DataLink]) -> Self {
        FdLayout::new(
            plan.internal.len(),
            matches!(plan.management, Management::Passthrough { .. }),
            &vec![launch.queues; links.len()],
        )
        .with_vhost(launch.vhost)
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

    /// The numbers of the vhost-net fds of data link `pos`'s queues (None without vhost-net).
    pub fn vhost(&self, pos: usize) -> Option<Range<i32>> {
        self.vhost.get(pos).cloned()
    }

    /// Every number the spawn opens a fresh vhost-net fd at, in link and queue order (empty
    /// without vhost-net).
    pub fn vhost_numbers(&self) -> Vec<i32> {
        self.vhost.iter().flat_map(Range::clone).collect()
    }

    /// The `-netdev tap` fd arguments of data link `pos`: "fd=10", or "fds=10:11:12:13" with
    /// several queues; with vhost-net followed by ",vhost=on,vhostfd=11" or
    /// ",vhost=on,vhostfds=14:15:16:17".
    pub fn netdev_fd_arg(&self, pos: usize) -> String {
        let list = |key: &str, r: Range<i32>| {
            if r.len() == 1 {
                format!("{key}={}", r.start)
            } else {
                let list: Vec<String> = r.map(|n| n.to_string()).collect();
                format!("{key}s={}", list.join(":"))
            }
        };
        let mut arg = list("fd", self.data(pos));
        if let Some(v) = self.vhost(pos) {
            arg.push_str(",vhost=on,");
            arg.push_str(&list("vhostfd", v));
        }
        arg
    }

    /// The number of the guest RAM's memfd (qemu maps it as `/proc/self/fd/N`): right
    /// above every tap and vhost-net fd, so the highest number handed to qemu.
    pub fn ram(&self) -> i32 {
        let data = (self.vhost.last().or(self.data.last())).map(|r| r.end - 1);
        let mgmt = self.passthrough.then_some(MGMT);
        let internal = self.internal.checked_sub(1).map(|k| self.internal(k));
        data.or(mgmt).or(internal).unwrap_or(2) + 1
    }

    /// The highest number handed to qemu (the RAM's).
    pub fn max_fd(&self) -> i32 {
        self.ram()
    }

    /// How many fds qemu is handed (taps, vhost-net fds and the RAM).
    pub fn count(&self) -> usize {
        self.taps() + self.vhost.iter().map(|r| r.len()).sum::<usize>() + 1
    }

    /// How many taps qemu is handed (the fds the launcher keeps open for its whole life).
    pub fn taps(&self) -> usize {
        self.internal + self.passthrough as usize + self.data.iter().map(|r| r.len()).sum::<usize>()
    }

    /// Pairs each open tap fd with its number: the management tap (passthrough only), the
    /// internal-network taps in order, and per data link (in link order) its queue taps.
    /// Errs when the counts disagree with the layout. The vhost-net fds are not among them:
    /// the spawn opens them afresh for each qemu at [`FdLayout::vhost_numbers`].
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

/// The RLIMIT_NOFILE a node needs, from each VM's layout (its vhost-net fds included): the
/// most of what the launcher needs while it spawns any VM's qemu (every tap of every VM open,
/// that VM's vhost-net fds opened for the spawn, its own files, and that VM's parked copies
/// above its highest number) and what each qemu needs (its numbers, its own files, the
/// eventfds vhost-net needs per queue).
pub fn nofile_needed(vms: &[FdLayout]) -> u64 {
    let taps: u64 = vms.iter().map(|l| l.taps() as u64).sum();
    let launcher_own = LAUNCHER_OWN + LAUNCHER_PER_VM * vms.len() as u64;
    let per_vm = vms.iter().map(|l| {
        let (top, n) = (l.max_fd() as u64 + 1, l.count() as u64);
        let vhost = n - 1 - l.taps() as u64;
        let launcher = top + taps + vhost + launcher_own + n;
        let qemu = top + QEMU_OWN + QEMU_PER_VHOST_TAP * vhost;
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
        assert_eq!((l.ram(), l.max_fd()), (22, 22), "the RAM right above");
        let one = FdLayout::new(0, false, &[1, 1]);
        assert_eq!(one.netdev_fd_arg(0), "fd=10");
        assert_eq!(one.netdev_fd_arg(1), "fd=11");
        assert_eq!(FdLayout::new(0, false, &[]).ram(), 3);
        assert_eq!(FdLayout::new(3, false, &[]).ram(), 6);
        assert_eq!(FdLayout::new(3, true, &[]).ram(), 10);
    }

    #[test]
    fn parking_starts_above_every_number() {
        let l = FdLayout::new(1, true, &[2, 1]);
        let bound = l.bind(Some(50), &[60], &[vec![11, 10], vec![12]]).unwrap();
        // The spawn hands the RAM's memfd over with the taps.
        let with_ram = [bound, vec![(l.ram(), 70)]].concat();
        assert_eq!(park_from(&with_ram), l.max_fd() + 1);
        assert_eq!(park_from(&with_ram), 14);
        assert_eq!(park_from(&[]), 3);
        assert_eq!(l.count(), 6);
    }

    #[test]
    fn the_open_file_limit_counts_every_tap_and_vhost() {
        // One link, one queue, TCG: far below Docker's 1024. Its tap at 10, the RAM at 11.
        let one = FdLayout::new(0, false, &[1]);
        assert_eq!(one.count(), 2);
        assert_eq!(
            nofile_needed(std::slice::from_ref(&one)),
            12 + 1 + 64 + 32 + 2
        );
        // 60 links of 4 queues: 240 taps at 10..250, the RAM at 250; the launcher holds them
        // all and parks 241 copies above 250.
        let big = FdLayout::new(0, false, &[4; 60]);
        assert_eq!(
            nofile_needed(std::slice::from_ref(&big)),
            251 + 240 + 96 + 241
        );
        // With vhost-net: 240 vhost-net fds at 250..490 (the RAM at 490), which the launcher
        // opens for the spawn (and parks, with the taps and the RAM: 481 copies): the launcher
        // needs the most. qemu needs its 491 numbers, 64 of its own and 4 eventfds per queue:
        // 1515.
        let vhost = big.clone().with_vhost(true);
        assert_eq!(
            (vhost.count(), vhost.taps(), vhost.max_fd()),
            (481, 240, 490)
        );
        assert_eq!(nofile_needed(&[vhost]), 491 + 240 + 240 + 96 + 481);
        let eight = FdLayout::new(0, false, &[1; 8]).with_vhost(true);
        assert_eq!(nofile_needed(&[eight]), 27 + 8 + 8 + 96 + 17);
        // Two VMs: the launcher holds both VMs' taps while it spawns either.
        let two = nofile_needed(&[one.clone(), big]);
        assert_eq!(two, 251 + 241 + 64 + 64 + 241);
        assert_eq!(nofile_needed(&[]), 64);
    }

    #[test]
    fn vhost_fds_follow_the_data_taps_queue_by_queue() {
        // Two internal taps, passthrough, links of 2, 1 and 4 queues: taps 10..17, then one
        // vhost-net fd per queue in the same order, 17..24.
        let l = FdLayout::new(2, true, &[2, 1, 4]).with_vhost(true);
        assert_eq!((l.data(0), l.data(1), l.data(2)), (10..12, 12..13, 13..17));
        assert_eq!(l.vhost(0), Some(17..19));
        assert_eq!(l.vhost(1), Some(19..20));
        assert_eq!(l.vhost(2), Some(20..24));
        assert_eq!(l.vhost_numbers(), (17..24).collect::<Vec<_>>());
        assert_eq!(l.netdev_fd_arg(0), "fds=10:11,vhost=on,vhostfds=17:18");
        assert_eq!(l.netdev_fd_arg(1), "fd=12,vhost=on,vhostfd=19");
        assert_eq!(
            l.netdev_fd_arg(2),
            "fds=13:14:15:16,vhost=on,vhostfds=20:21:22:23"
        );
        assert_eq!((l.max_fd(), l.count(), l.taps()), (24, 18, 10));
        // The spawn parks above the vhost-net numbers too (and the RAM's, 24: not bound here).
        let bound = l
            .bind(
                Some(50),
                &[60, 61],
                &[vec![70, 71], vec![72], vec![73, 74, 75, 76]],
            )
            .unwrap();
        let vhost: Vec<(i32, RawFd)> = l.vhost_numbers().into_iter().map(|n| (n, 90)).collect();
        assert_eq!(park_from(&[bound, vhost].concat()), 24);
        // Without vhost-net (or without data links) nothing changes.
        let off = FdLayout::new(2, true, &[2, 1, 4]).with_vhost(false);
        assert_eq!(off, FdLayout::new(2, true, &[2, 1, 4]));
        assert_eq!((off.vhost(0), off.vhost_numbers()), (None, vec![]));
        assert_eq!(off.netdev_fd_arg(1), "fd=12");
        let none = FdLayout::new(1, false, &[]).with_vhost(true);
        assert_eq!((none.max_fd(), none.vhost_numbers()), (4, vec![]));
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
