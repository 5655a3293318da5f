//! The status page (`/` on `metrics_listen`) of a real daemon, loaded in Debian's headless
//! `chromium`: what a person sees (the DOM the browser built, and a screenshot at a phone's
//! width). With `CI=true` a missing `chromium` fails the test.

use std::path::Path;
use std::process::Command;

use crate::daemon::has;
use crate::helpers::*;
use crate::metrics::{daemon_with_metrics, get, tool};

/// What a person sees: the page loaded in headless Chromium (the DOM it built, and a
/// screenshot at a phone's width).
#[test]
fn the_status_page_in_a_headless_browser() {
    if !tool("chromium") {
        return;
    }
    let tmp = crate::daemon::prepared();
    let dir = tmp.path();
    append_config(
        dir,
        "[instances.contoso.backups.hostile]\nlabel = \"<script>document.title='owned'</script><b>bold</b> & \\\"q\\\"\"",
    );
    let (d, port) = daemon_with_metrics(dir);
    d.wait_for("the hostile label backed up", || {
        has(dir, "hostile", "completed")
    });
    // A version update: a system backup first.
    let text = std::fs::read_to_string(dir.join("backplan.toml")).unwrap();
    std::fs::write(
        dir.join("backplan.toml"),
        text.replacen("version = \"9.0\"", "version = \"9.1\"", 1),
    )
    .unwrap();
    d.wait_for("the pre-update backup", || {
        backups_json(dir)
            .iter()
            .any(|b| b["kind"] == "pre-update" && b["status"] == "completed")
    });
    let url = format!("http://127.0.0.1:{port}/");
    let chromium = |args: &[&str]| {
        let out = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--hide-scrollbars",
            ])
            .args(args)
            .arg(&url)
            .env("HOME", dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "chromium failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let dom = chromium(&["--dump-dom"]);
    for seen in [
        "<title>backplan status</title>",
        "name=\"viewport\"",
        "Instances",
        ">contoso<",
        ">contoso-sandbox<",
        ">production<",
        ">sandbox<",
        "Before solution import",
        "Label",
        "Created by",
        "Created on",
        "Expires on",
        "Storage",
        "edit, delete, restore",
        ">System<",
        ">user<",
        "No changes.",
    ] {
        assert!(dom.contains(seen), "{seen} not on the page:\n{dom}");
    }
    // The hostile label is text: no element came of it, the title is ours.
    assert!(
        dom.contains(
            "&lt;script&gt;document.title='owned'&lt;/script&gt;&lt;b&gt;bold&lt;/b&gt; &amp; \"q\""
        ),
        "{dom}"
    );
    assert!(!dom.contains("<b>bold</b>"), "{dom}");
    assert!(!dom.contains("<script"), "{dom}");

    // A rejected file: its diagnostics are on the page.
    append_config(dir, "[instances.contoso.backups.b3]\nlable = \"typo\"");
    d.wait_for("the diagnostics on the page", || {
        get(port, "/").2.contains("unknown key `lable`")
    });
    let dom = chromium(&["--dump-dom"]);
    assert!(
        dom.contains("The configuration file was rejected") && dom.contains("did you mean"),
        "{dom}"
    );

    // A phone's width; the screenshot is kept in target/ (docs/status-page.png is one).
    let shot = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/status-page-phone.png");
    chromium(&[
        &format!("--screenshot={}", shot.display()),
        "--window-size=412,1600",
    ]);
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    assert_eq!(width, 412);
    // Nothing on the page changed anything: the state is as it was.
    let before = backups_json(dir).len();
    for _ in 0..3 {
        assert_eq!(get(port, "/").0, 200);
    }
    assert_eq!(backups_json(dir).len(), before);
    let (code, _) = d.stop();
    assert_eq!(code, Some(0));
}
