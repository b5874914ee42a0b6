//! `[install]`: its parse, the errors naming its keys, and the node `launcher install` runs.

use super::tests::{p, pn, TWO};
use super::*;
use std::time::Duration;

const INSTALL: &str = r#"
[[disk]]
path = "nos.qcow2"
[console]
ready_pattern = "login:"
ready_tcp = 22
[management]
forwards = ["tcp:22"]
[bootstrap]
steps = [{ expect = "login:" }]
[install]
timeout = 900
steps = [
  { expect = "login:", timeout = 600, answers = [{ on = "\\[yes/no\\]:", send = "no" }] },
  { send = "{hostname}" },
]
"#;

#[test]
fn the_install_node_writes_images_in_place_and_its_only_readiness_is_the_steps() {
    let node = pn(&format!("[kernel]\npath = \"k\"\n{INSTALL}"), &[]).unwrap();
    let install = node.install.clone().unwrap();
    assert_eq!((install.vm, install.timeout), (0, Duration::from_secs(900)));
    assert!(matches!(
        &install.steps[0],
        Step::Expect { answers, .. } if answers[0].send == "no"
    ));
    // `run` keeps its overlay and bootstrap.
    assert!(matches!(
        &node.vms[0].boot.disks[0].kind,
        DiskKind::Image {
            overlay: Some(_),
            ..
        }
    ));
    let i = node.for_install().unwrap();
    let vm = &i.vms[0];
    assert!(matches!(
        &vm.boot.disks[0].kind,
        DiskKind::Image { overlay: None, .. }
    ));
    let b = vm.bootstrap.as_ref().unwrap();
    assert_eq!(
        (&b.steps, b.on_timeout, b.attempts),
        (&install.steps, BootAction::Fail, 1)
    );
    assert_eq!(
        (vm.console.ready_pattern.as_ref(), vm.console.ready_tcp),
        (None, None)
    );
    assert_eq!(vm.supervision.boot_timeout, Duration::from_secs(900));
    assert_eq!(vm.supervision.restart, RestartPolicy::Never);
    // Without [install], nothing to install.
    assert!(p("[kernel]\npath = \"k\"\n", &[]).is_ok());
    assert!(pn("[kernel]\npath = \"k\"\n", &[])
        .unwrap()
        .for_install()
        .is_none());
}

#[test]
fn the_install_vm_is_named_in_a_node_of_several() {
    let text = format!("{TWO}\n[install]\nvm = \"lc\"\nsteps = [{{ wait = 1.0 }}]\n");
    let node = pn(&text, &[]).unwrap();
    let i = node.for_install().unwrap();
    assert_eq!(node.install.as_ref().unwrap().vm, 1);
    assert!(i.vms[0].bootstrap.is_none() && i.vms[1].bootstrap.is_some());
    assert_eq!(i.vms[1].console.ready_pattern, None);
}

#[test]
fn install_errors_name_their_key() {
    let cases = [
        ("[install]\nsteps = []", "install.steps"),
        (
            "[install]\nvm = \"nope\"\nsteps = [{ wait = 1.0 }]",
            "install.vm",
        ),
        (
            "[install]\ntimeout = 0\nsteps = [{ wait = 1.0 }]",
            "install.timeout",
        ),
        (
            "[install]\nsteps = [{ expect = \"x\", answers = [{ on = \"(\", send = \"y\" }] }]",
            "install.steps[0].answers[0].on",
        ),
        (
            "[install]\nsteps = [{ send = \"{nope}\" }]",
            "install.steps[0].send",
        ),
    ];
    for (text, key) in cases {
        let e = pn(&format!("[kernel]\npath = \"k\"\n{text}"), &[]).unwrap_err();
        assert!(e.to_string().starts_with(&format!("{key} ")), "{text}: {e}");
    }
}

#[test]
fn a_sendkey_step_is_qemu_key_names_joined_by_dashes() {
    let plan = p(
        "[kernel]\npath = \"k\"\n[bootstrap]\nsteps = [{ sendkey = \"ctrl-alt-f2\" }]",
        &[],
    )
    .unwrap();
    assert_eq!(
        plan.bootstrap.unwrap().steps,
        [Step::SendKey(vec![
            "ctrl".into(),
            "alt".into(),
            "f2".into()
        ])]
    );
    for (step, key) in [
        ("{ sendkey = \"Ctrl+Alt\" }", "bootstrap.steps[0].sendkey"),
        ("{ sendkey = \"ctrl--f2\" }", "bootstrap.steps[0].sendkey"),
        ("{ sendkey = \"ret\", send = \"x\" }", "bootstrap.steps[0]"),
    ] {
        let e = pn(
            &format!("[kernel]\npath = \"k\"\n[bootstrap]\nsteps = [{step}]"),
            &[],
        )
        .unwrap_err();
        assert!(e.to_string().starts_with(&format!("{key} ")), "{step}: {e}");
    }
}
