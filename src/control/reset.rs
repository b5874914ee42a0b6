//! Reset requests: `launcher reset [VM]` (and vrnetlab's `/reset` file) asks for a QMP
//! `system_reset` of VMs. This module owns the request, the per-VM senders ([`Resets`]) and
//! the fan-out to the VMs asked for; the VM's supervisor holds the receiving end and does the
//! reset. It never talks QMP itself.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// One reset asked of one VM: the answer is `Ok` once qemu accepted `system_reset`, else why not.
#[derive(Debug)]
pub struct ResetRequest {
    pub reply: oneshot::Sender<Result<(), String>>,
}

/// The VMs that can be reset, by name, in node order.
pub type Resets = Arc<Vec<(String, mpsc::Sender<ResetRequest>)>>;

/// How long one VM may take to answer a reset (its supervisor is between qemu runs, at most).
const ANSWER: Duration = Duration::from_secs(5);

/// One channel per VM name: the senders for the server and the `/reset` file, the receivers for
/// the VMs' supervisors, in the same order.
pub fn channels(names: &[String]) -> (Resets, Vec<mpsc::Receiver<ResetRequest>>) {
    let (tx, rx): (Vec<_>, Vec<_>) = names
        .iter()
        .map(|n| {
            let (t, r) = mpsc::channel(4);
            ((n.clone(), t), r)
        })
        .unzip();
    (Arc::new(tx), rx)
}

/// Which VMs `which` names: every VM for none; else each entry is a VM's name or its number
/// in node order (0 = the first, as vrnetlab numbers its VMs). Err names the unknown one.
pub fn select(resets: &Resets, which: &[&str]) -> Result<Vec<usize>, String> {
    if which.is_empty() {
        return Ok((0..resets.len()).collect());
    }
    let mut out = Vec::new();
    for w in which {
        let by_name = resets.iter().position(|(n, _)| n == w);
        let by_number = w.parse::<usize>().ok().filter(|&i| i < resets.len());
        match by_name.or(by_number) {
            Some(i) if !out.contains(&i) => out.push(i),
            Some(_) => {}
            None => {
                let names: Vec<&str> = resets.iter().map(|(n, _)| n.as_str()).collect();
                return Err(format!("no VM {w:?} here; VMs: {}", names.join(", ")));
            }
        }
    }
    Ok(out)
}

/// Resets the VMs `which` names (see [`select`]), one after the other; the names of those
/// reset, or the first refusal.
pub async fn reset(resets: &Resets, which: &[&str]) -> Result<Vec<String>, String> {
    let mut done = Vec::new();
    for i in select(resets, which)? {
        let (name, tx) = &resets[i];
        let (reply, answer) = oneshot::channel();
        let asked = tx.send_timeout(ResetRequest { reply }, ANSWER).await;
        if asked.is_err() {
            return Err(format!("VM {name}: not running"));
        }
        match tokio::time::timeout(ANSWER, answer).await {
            Ok(Ok(Ok(()))) => done.push(name.clone()),
            Ok(Ok(Err(why))) => return Err(format!("VM {name}: {why}")),
            Ok(Err(_)) => return Err(format!("VM {name}: not running")),
            Err(_) => return Err(format!("VM {name}: no answer within {ANSWER:?}")),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_by_name_or_number_and_unknown_ones_named() {
        let (resets, _rx) = channels(&["vcp".into(), "vfp".into()]);
        assert_eq!(select(&resets, &[]).unwrap(), vec![0, 1]);
        assert_eq!(select(&resets, &["vfp"]).unwrap(), vec![1]);
        assert_eq!(select(&resets, &["1", "0", "1"]).unwrap(), vec![1, 0]);
        assert_eq!(
            select(&resets, &["lc1"]).unwrap_err(),
            "no VM \"lc1\" here; VMs: vcp, vfp"
        );
        assert!(select(&resets, &["2"]).is_err());
    }

    /// Each VM asked answers; one that refuses stops the fan-out with its reason, and a VM
    /// whose receiver is gone is "not running".
    #[tokio::test]
    async fn each_vm_answers_and_a_refusal_is_named() {
        let (resets, mut rx) = channels(&["a".into(), "b".into()]);
        let mut b = rx.pop().unwrap();
        let mut a = rx.pop().unwrap();
        let vms = tokio::spawn(async move {
            let r = a.recv().await.unwrap();
            r.reply.send(Ok(())).unwrap();
            let r = b.recv().await.unwrap();
            r.reply.send(Err("QMP not connected".into())).unwrap();
            (a, b)
        });
        assert_eq!(
            reset(&resets, &[]).await.unwrap_err(),
            "VM b: QMP not connected"
        );
        let (a, b) = vms.await.unwrap();
        drop(b);
        let answer = tokio::spawn({
            let resets = resets.clone();
            async move { reset(&resets, &["a"]).await }
        });
        let mut a = a;
        a.recv().await.unwrap().reply.send(Ok(())).unwrap();
        assert_eq!(answer.await.unwrap().unwrap(), vec!["a".to_string()]);
        assert_eq!(
            reset(&resets, &["b"]).await.unwrap_err(),
            "VM b: not running"
        );
    }
}
