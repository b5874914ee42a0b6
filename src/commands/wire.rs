//! `launcher wire` / `launcher unwire`: the tc pipe for users who run qemu or libvirt
//! themselves. Parses ETH=TAP pairs (pure), checks every interface before touching anything,
//! wires with undo on failure. Never runs a VM; the wiring itself is `net`'s.

use crate::config::ifname_problem;
use crate::exit::Code;
use crate::net::tap;
use crate::net::{wire_links, LinkInfo, NetError, Netlink};

/// A `launcher wire`/`unwire` argument: ETH=TAP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    pub eth: String,
    pub tap: String,
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("{arg:?}: {why}")]
    Usage { arg: String, why: String },
    #[error(transparent)]
    Net(#[from] NetError),
}

/// The user's input is bad input; anything else is a failure.
impl From<&WireError> for Code {
    fn from(e: &WireError) -> Self {
        match e {
            WireError::Usage { .. } => Code::BadInput,
            WireError::Net(_) => Code::Failure,
        }
    }
}

/// `launcher wire ETH=TAP...`: one line per pair; 0, or 2 for bad input, 1 for a failure.
pub fn wire(rt: &tokio::runtime::Runtime, args: &[String], mtu: Option<u32>) -> Code {
    outcome(parse_pairs(args).and_then(|p| rt.block_on(wire_pairs(&p, mtu))))
}

/// `launcher unwire ETH=TAP...`: as [`wire`].
pub fn unwire(rt: &tokio::runtime::Runtime, args: &[String]) -> Code {
    outcome(parse_pairs(args).and_then(|p| rt.block_on(unwire_pairs(&p))))
}

fn outcome(res: Result<Vec<String>, WireError>) -> Code {
    match res {
        Ok(lines) => {
            for l in lines {
                println!("{l}");
            }
            Code::Ok
        }
        Err(e) => {
            super::report(&e);
            Code::from(&e)
        }
    }
}

/// Parses ETH=TAP arguments (pure).
pub fn parse_pairs(args: &[String]) -> Result<Vec<Pair>, WireError> {
    let mut out: Vec<Pair> = Vec::new();
    for a in args {
        let usage = |why: &str| WireError::Usage {
            arg: a.clone(),
            why: why.into(),
        };
        let (eth, tap) = a
            .split_once('=')
            .ok_or_else(|| usage("expected ETH=TAP, for example eth1=tap1"))?;
        for n in [eth, tap] {
            // The config's one rule; '=' separates the pair, so it cannot be in a name here.
            if ifname_problem(n).is_some() || n.contains('=') {
                return Err(usage(&format!("{n:?} is not a valid interface name")));
            }
        }
        if eth == tap {
            return Err(usage("ETH and TAP must differ"));
        }
        if out
            .iter()
            .any(|p| p.eth == eth || p.tap == tap || p.eth == tap || p.tap == eth)
        {
            return Err(usage("an interface appears in two pairs"));
        }
        out.push(Pair {
            eth: eth.into(),
            tap: tap.into(),
        });
    }
    if out.is_empty() {
        return Err(WireError::Usage {
            arg: String::new(),
            why: "give at least one ETH=TAP pair".into(),
        });
    }
    Ok(out)
}

/// Looks `name` up; missing is the user's error, named by its pair.
async fn existing(nl: &Netlink, p: &Pair, name: &str) -> Result<LinkInfo, WireError> {
    nl.link(name).await?.ok_or_else(|| WireError::Usage {
        arg: format!("{}={}", p.eth, p.tap),
        why: format!("interface {name} does not exist"),
    })
}

/// The tap of `p`, created as a persistent tap when missing (true: created here).
async fn tap_of(nl: &Netlink, p: &Pair) -> Result<(LinkInfo, bool), NetError> {
    if let Some(t) = nl.link(&p.tap).await? {
        return Ok((t, false));
    }
    let t = tap::open(&p.tap, false)?;
    tap::set_persistent(&t, true)?;
    drop(t);
    let li = nl
        .link(&p.tap)
        .await?
        .ok_or_else(|| NetError::NoSuchLink(p.tap.clone()))?;
    Ok((li, true))
}

/// `launcher wire`: checks every ETH exists before touching anything, creates missing taps as
/// persistent taps, wires and verifies both directions. On a failure, what this call did is
/// undone. Returns one line per pair.
pub async fn wire_pairs(pairs: &[Pair], mtu: Option<u32>) -> Result<Vec<String>, WireError> {
    let nl = Netlink::new()?;
    let mut eths = Vec::new();
    for p in pairs {
        eths.push(existing(&nl, p, &p.eth).await?);
    }
    let mut done: Vec<(LinkInfo, LinkInfo, bool)> = Vec::new();
    let mut lines = Vec::new();
    for (p, eth) in pairs.iter().zip(&eths) {
        let (tap, created) = match tap_of(&nl, p).await {
            Ok(x) => x,
            Err(e) => {
                undo(&nl, &done).await;
                return Err(e.into());
            }
        };
        let res = wire_links(&nl, eth, &tap, mtu.unwrap_or(eth.mtu)).await;
        done.push((eth.clone(), tap.clone(), created));
        if let Err(e) = res {
            undo(&nl, &done).await;
            return Err(e.into());
        }
        lines.push(format!(
            "{} (ifindex {}) <-> {} (ifindex {}): wired both ways{}",
            eth.name,
            eth.index,
            tap.name,
            tap.index,
            if created { ", tap created" } else { "" }
        ));
    }
    Ok(lines)
}

/// Undoes what [`wire_pairs`] did: best effort, each step on its own.
async fn undo(nl: &Netlink, done: &[(LinkInfo, LinkInfo, bool)]) {
    for (eth, tap, created) in done {
        let _ = nl.unwire(eth).await;
        let _ = nl.unwire(tap).await;
        if *created {
            let _ = nl.delete(tap.index, &tap.name).await;
        }
    }
}

/// `launcher unwire`: checks both names of every pair exist, then removes both directions
/// (the ingress qdiscs). Taps are left in place.
pub async fn unwire_pairs(pairs: &[Pair]) -> Result<Vec<String>, WireError> {
    let nl = Netlink::new()?;
    let mut found = Vec::new();
    for p in pairs {
        let eth = existing(&nl, p, &p.eth).await?;
        let tap = existing(&nl, p, &p.tap).await?;
        found.push((eth, tap));
    }
    let mut lines = Vec::new();
    for (eth, tap) in found {
        nl.unwire(&eth).await?;
        nl.unwire(&tap).await?;
        lines.push(format!("{} <-> {}: unwired", eth.name, tap.name));
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs() {
        let p = parse_pairs(&["eth1=tap1".into(), "eth2=vm-2".into()]).unwrap();
        assert_eq!(
            p[1],
            Pair {
                eth: "eth2".into(),
                tap: "vm-2".into()
            }
        );
        for bad in [
            vec!["eth1"],
            vec!["eth1=eth1"],
            vec!["=tap1"],
            vec!["eth1=tap1", "eth1=tap2"],
            vec!["eth1=tap1", "tap1=tap2"],
            vec!["eth1=a/b"],
            vec!["eth1=a b"],
            vec!["eth1=a=b"],
            vec!["eth1=waytoolonginterfacename"],
            vec![],
        ] {
            let args: Vec<String> = bad.iter().map(|s| s.to_string()).collect();
            let e = parse_pairs(&args).expect_err(&format!("{bad:?}"));
            assert_eq!(Code::from(&e), Code::BadInput, "{bad:?}");
        }
    }

    #[test]
    fn usage_names_the_argument() {
        let e = parse_pairs(&["eth1".into()]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "\"eth1\": expected ETH=TAP, for example eth1=tap1"
        );
    }
}
