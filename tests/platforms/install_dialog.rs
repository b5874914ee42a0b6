//! The install phase's dialogs (images/<kind>/dialog/install*.txt) and the restarts on a kept
//! disk (restart-kept-disk*.txt): every platform with INSTALL=1 has its install transcripts, and
//! those transcripts are not vacuous (a wrong send or a wrong last prompt fails them). The
//! transcripts themselves play in [`super::dialog`].

use super::dialog::{install_config, parse, run, Phase};
use launcher::config::{self, Overrides};
use std::time::Duration;

/// The install phase's coverage: a platform with INSTALL=1 in build.conf has an `[install]` in
/// the config its install runs, an install transcript that finishes and one that fails; a
/// platform with install transcripts has INSTALL=1.
#[test]
fn every_install_platform_has_its_install_dialog() {
    let mut wrong = Vec::new();
    for kind in super::catalogue::kinds() {
        let dir = super::catalogue::root().join("images").join(&kind);
        let conf = std::fs::read_to_string(dir.join("build.conf")).unwrap();
        let install = conf.lines().any(|l| l.trim() == "INSTALL=1");
        let transcripts: Vec<String> = std::fs::read_dir(dir.join("dialog"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("install") && n.ends_with(".txt"))
            .collect();
        let fails = |n: &String| {
            std::fs::read_to_string(dir.join("dialog").join(n))
                .unwrap()
                .lines()
                .any(|l| l.trim() == "! fails")
        };
        if !install {
            if !transcripts.is_empty() {
                wrong.push(format!("{kind}: install transcripts but no INSTALL=1"));
            }
            continue;
        }
        let config = install_config(&kind);
        let env = config::Env::new();
        match config::load(&config, &env, &Overrides::default()) {
            Ok(node) if node.install.is_some() => {}
            Ok(_) => wrong.push(format!("{kind}: {}: no [install]", config.display())),
            Err(e) => wrong.push(format!("{kind}: {}: {e}", config.display())),
        }
        if !transcripts.iter().any(|n| !fails(n)) || !transcripts.iter().any(fails) {
            wrong.push(format!(
                "{kind}: INSTALL=1 needs an install transcript that finishes and one that fails, has {transcripts:?}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The transcripts of the install phases and of restarts on a kept disk (`install*.txt`,
/// `restart-kept-disk*.txt`) are not vacuous: with
/// the first line the launcher must send changed, or the last line the guest prints (the one
/// the dialog's last wait depends on) changed, each fails; unchanged, each plays.
#[test]
fn a_wrong_send_or_prompt_fails_each_install_and_restart_transcript() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut wrong = Vec::new();
    for kind in super::catalogue::kinds() {
        let dir = super::catalogue::root()
            .join("images")
            .join(&kind)
            .join("dialog");
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| {
                (n.starts_with("install") || n.starts_with("restart-kept-disk"))
                    && n.ends_with(".txt")
            })
            .collect();
        names.sort();
        for name in names {
            let text = std::fs::read_to_string(dir.join(&name)).unwrap();
            if parse(&text).fails {
                continue;
            }
            let config = match Phase::of(&name) {
                Phase::Run => super::catalogue::config(&kind),
                Phase::Install => install_config(&kind),
            };
            let startup = std::fs::read_to_string(dir.join("startup-config.cfg")).ok();
            let lines: Vec<&str> = text.lines().collect();
            let first_send = lines.iter().position(|l| l.starts_with("> "));
            let last_print = lines.iter().rposition(|l| l.starts_with('<'));
            let mut variants = vec![("unchanged", text.clone(), true)];
            if let Some(i) = first_send {
                let mut l = lines.clone();
                let bad = format!("{}-wrong", l[i]);
                l[i] = &bad;
                variants.push(("first send changed", l.join("\n"), false));
            }
            if let Some(i) = last_print {
                let mut l = lines.clone();
                l[i] = "< (something else)";
                variants.push(("last prompt changed", l.join("\n"), false));
            }
            for (what, t, plays) in variants {
                let mut t = parse(&t);
                // A wrong prompt fails at a cut time-out, not after the step's hour.
                t.timeouts.get_or_insert(Duration::from_secs(3));
                let r = rt.block_on(run(&config, &kind, &name, t, startup.clone()));
                if r.is_ok() != plays {
                    wrong.push(format!("{kind}/{name} ({what}): {r:?}"));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
