//! External storage against real emulators: Azurite (Azure Blob) and moto in server mode (S3).
//! `scripts/install-test-deps.sh` installs and starts both on loopback and writes where they
//! are to `target/test-emulators/{azurite,s3}/endpoint` (`BACKPLAN_TEST_AZURITE` and
//! `BACKPLAN_TEST_S3` point elsewhere). Each test makes a container or bucket of its own. With
//! `CI=true` a missing emulator fails the tests; otherwise they are skipped with a loud message.

use std::path::Path;
use std::process::Command;

use crate::helpers::*;
use crate::trees::*;

/// Azurite's well-known development account and key.
pub(crate) const AZ_ACCOUNT: &str = "devstoreaccount1";
pub(crate) const AZ_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

pub(crate) fn emulator(name: &str, var: &str) -> Option<String> {
    let known = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-emulators");
    let url = std::env::var(var)
        .ok()
        .or_else(|| std::fs::read_to_string(known.join(name).join("endpoint")).ok())
        .map(|u| u.trim().trim_end_matches('/').to_string());
    let up = url.clone().filter(|u| {
        Command::new("curl")
            .args(["-s", "-o", "/dev/null", "--max-time", "5", u])
            .status()
            .is_ok_and(|s| s.success())
    });
    if up.is_none() {
        let why = format!(
            "the {name} emulator is not running for the tests: run scripts/install-test-deps.sh (or set {var})"
        );
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{why}");
        }
        eprintln!("\n!!!!!!!! SKIPPED: {why} !!!!!!!!\n");
    }
    up
}

/// A name no other test (or earlier run) uses: lower-case letters, digits and dashes.
pub(crate) fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
            % 1_000_000_000_000
    )
}

fn curl(args: &[&str]) -> (u32, String) {
    let out = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl is installed");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// Signs an Azure Blob request with the account's shared key; the headers to send.
fn azure_headers(method: &str, path: &str, query: &[(&str, &str)]) -> Vec<String> {
    use base64::Engine as _;
    use hmac::Mac as _;
    let date = chrono::Utc::now()
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    let version = "2021-08-06";
    // Path-style URLs (the emulator's): the account, then the whole URL path.
    let mut resource = format!("/{AZ_ACCOUNT}/{AZ_ACCOUNT}{path}");
    let mut q: Vec<_> = query.to_vec();
    q.sort();
    for (k, v) in q {
        resource += &format!("\n{k}:{v}");
    }
    let to_sign = format!(
        "{method}\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n{resource}"
    );
    let key = base64::engine::general_purpose::STANDARD
        .decode(AZ_KEY)
        .unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(to_sign.as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    vec![
        format!("x-ms-date: {date}"),
        format!("x-ms-version: {version}"),
        format!("Authorization: SharedKey {AZ_ACCOUNT}:{sig}"),
    ]
}

fn azure_request(
    endpoint: &str,
    method: &str,
    path: &str,
    query: &[(&str, &str)],
) -> (u32, String) {
    let base = endpoint.trim_end_matches(&format!("/{AZ_ACCOUNT}"));
    let qs: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let url = format!("{base}/{AZ_ACCOUNT}{path}?{}", qs.join("&"));
    let headers = azure_headers(method, path, query);
    let mut args = vec!["-X", method, &url];
    for h in &headers {
        args.push("-H");
        args.push(h);
    }
    args.extend(["-H", "Content-Length: 0"]);
    curl(&args)
}

pub(crate) fn create_container(endpoint: &str, name: &str) {
    let (code, body) = azure_request(
        endpoint,
        "PUT",
        &format!("/{name}"),
        &[("restype", "container")],
    );
    assert_eq!(code, 201, "creating container {name}: {body}");
}

/// The names of the blobs in a container.
pub(crate) fn blobs(endpoint: &str, container: &str) -> Vec<String> {
    let (code, body) = azure_request(
        endpoint,
        "GET",
        &format!("/{container}"),
        &[("comp", "list"), ("restype", "container")],
    );
    assert_eq!(code, 200, "{body}");
    body.split("<Name>")
        .skip(1)
        .map(|s| s.split("</Name>").next().unwrap().to_string())
        .collect()
}

pub(crate) fn create_bucket(endpoint: &str, name: &str) {
    let (code, body) = curl(&["-X", "PUT", &format!("{endpoint}/{name}")]);
    assert_eq!(code, 200, "creating bucket {name}: {body}");
}

/// A quickstart with a filled `contoso`, the storage `archive` declared as `storage`, and
/// its repository key in `archive.key`.
pub(crate) fn quickstart_with(storage: &str) -> tempfile::TempDir {
    let tmp = quickstart_copy();
    let dir = tmp.path();
    let prod = dir.join("data/contoso");
    std::fs::create_dir_all(&prod).unwrap();
    rich_tree(&prod);
    write_secret(&dir.join("archive.key"), "archive repository password\n");
    append_config(dir, storage);
    tmp
}

pub(crate) fn write_secret(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// Backs up `contoso` to `archive`, restores it into the sandbox, and checks the tree.
fn backup_and_restore(dir: &Path) {
    append_config(
        dir,
        "[instances.contoso.backups.offsite]\nlabel = \"Off the host\"\nstorage = \"archive\"",
    );
    let run = apply(dir);
    assert_eq!(run.code, 0, "{}", run.transcript());
    let list = backups_json(dir);
    let offsite: Vec<_> = list.iter().filter(|b| b["key"] == "offsite").collect();
    assert_eq!(offsite.len(), 1, "{list:?}");
    assert_eq!(offsite[0]["status"], "completed");
    assert_eq!(offsite[0]["storage"], "archive");
    // Nothing of it on this host: the local repository holds only what the quickstart's own
    // backup put there.
    let expected = dir.join("expected");
    let ok = Command::new("cp")
        .arg("-a")
        .arg(dir.join("data/contoso"))
        .arg(&expected)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    std::fs::write(dir.join("data/contoso/a.txt"), "changed after the backup\n").unwrap();

    append_config(
        dir,
        "[restores.from-archive]\nfrom = \"contoso/offsite\"\nto = \"contoso-sandbox\"",
    );
    let run = apply(dir);
    assert_eq!(run.code, 0, "{}", run.transcript());
    assert_same_tree(&expected, &dir.join("data/contoso-sandbox"));
}

#[test]
fn azure_backup_and_restore_through_azurite() {
    let Some(endpoint) = emulator("azurite", "BACKPLAN_TEST_AZURITE") else {
        return;
    };
    let container = unique("bp");
    create_container(&endpoint, &container);
    let tmp = quickstart_with(&format!(
        "[storage.archive]\nkind = \"azure\"\naccount = \"{AZ_ACCOUNT}\"\ncontainer = \"{container}\"\npath = \"backplan/prod\"\nendpoint = \"{endpoint}\"\naccess_key_env = \"BACKPLAN_TEST_AZ_KEY\"\npassword_file = \"archive.key\""
    ));
    let dir = tmp.path();
    // The key comes from the environment the file names.
    // SAFETY: tests in this process read no other variable of this name.
    unsafe { std::env::set_var("BACKPLAN_TEST_AZ_KEY", AZ_KEY) };
    backup_and_restore(dir);
    let names = blobs(&endpoint, &container);
    assert!(
        names.iter().any(|n| n == "backplan/prod/config"),
        "the repository is under the folder: {names:?}"
    );
    assert!(
        names.iter().all(|n| n.starts_with("backplan/prod/")),
        "{names:?}"
    );
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("backplan/prod/snapshots/")),
        "{names:?}"
    );
}

#[test]
fn s3_backup_and_restore_through_moto_and_restic_reads_it() {
    let Some(endpoint) = emulator("s3", "BACKPLAN_TEST_S3") else {
        return;
    };
    let bucket = unique("bp");
    create_bucket(&endpoint, &bucket);
    let tmp = quickstart_with(&format!(
        "[storage.archive]\nkind = \"s3\"\nbucket = \"{bucket}\"\npath = \"repo\"\nregion = \"us-east-1\"\nendpoint = \"{endpoint}\"\naccess_key_id = \"testing\"\nsecret_access_key_file = \"s3.secret\"\npassword_file = \"archive.key\""
    ));
    let dir = tmp.path();
    write_secret(&dir.join("s3.secret"), "testing-secret\n");
    // System backups go there too.
    let file = dir.join("backplan.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        text.replacen("[schedule]\n", "[schedule]\nstorage = \"archive\"\n", 1),
    )
    .unwrap();
    backup_and_restore(dir);
    let list = backups_json(dir);
    let safety: Vec<_> = list
        .iter()
        .filter(|b| b["kind"] == "pre-restore" && b["instance"] == "contoso-sandbox")
        .collect();
    assert_eq!(safety.len(), 1, "{list:?}");
    assert_eq!(safety[0]["status"], "completed");
    assert_eq!(safety[0]["storage"], "archive");
    assert!(
        safety[0]["expires_at"].is_string(),
        "a system backup keeps the schedule's retention: {:?}",
        safety[0]
    );

    // The listing names the storage and its kind; `show`, the location inside it.
    let run = backplan(dir, &["backups", "-c", "backplan.toml"]);
    assert_eq!(run.code, 0, "{}", run.transcript());
    assert!(run.stdout.contains("archive (S3)"), "{}", run.stdout);
    let run = backplan(dir, &["show", "-c", "backplan.toml", "contoso/offsite"]);
    assert_eq!(run.code, 0, "{}", run.transcript());
    assert!(
        run.stdout
            .contains(&format!("archive (S3, bucket `{bucket}`, folder `/repo`)")),
        "{}",
        run.stdout
    );

    // The stock restic reads the repository in the bucket.
    let out = Command::new("restic")
        .arg("-r")
        .arg(format!("s3:{endpoint}/{bucket}/repo"))
        .arg("--password-file")
        .arg(dir.join("archive.key"))
        .args(["--no-cache", "snapshots", "--json"])
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing-secret")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .output()
        .expect("restic is installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let snaps: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    for instance in ["instance=contoso", "instance=contoso-sandbox"] {
        assert!(
            snaps.iter().any(|s| s["tags"]
                .as_array()
                .unwrap()
                .contains(&serde_json::json!(instance))),
            "{instance}: {snaps:?}"
        );
    }
    let out = Command::new("restic")
        .arg("-r")
        .arg(format!("s3:{endpoint}/{bucket}/repo"))
        .arg("--password-file")
        .arg(dir.join("archive.key"))
        .args(["--no-cache", "check", "--read-data"])
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing-secret")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_wrong_azure_key_fails_clearly_and_writes_nothing() {
    let Some(endpoint) = emulator("azurite", "BACKPLAN_TEST_AZURITE") else {
        return;
    };
    let container = unique("bp");
    create_container(&endpoint, &container);
    let tmp = quickstart_with(&format!(
        "[storage.archive]\nkind = \"azure\"\naccount = \"{AZ_ACCOUNT}\"\ncontainer = \"{container}\"\nendpoint = \"{endpoint}\"\naccess_key_file = \"azure.key\"\npassword_file = \"archive.key\"\n\n[instances.contoso.backups.offsite]\nstorage = \"archive\""
    ));
    let dir = tmp.path();
    // A well-formed key of another account.
    write_secret(
        &dir.join("azure.key"),
        "bm90IHRoZSBrZXkgb2YgdGhpcyBhY2NvdW50IGF0IGFsbCwgc29ycnkgYWJvdXQgdGhhdA==",
    );
    let run = apply(dir);
    assert_ne!(run.code, 0, "{}", run.transcript());
    let out = run.transcript();
    assert!(
        out.contains("refused the credentials"),
        "the message says what is wrong: {out}"
    );
    assert_eq!(blobs(&endpoint, &container), Vec::<String>::new());
    let offsite: Vec<_> = backups_json(dir)
        .into_iter()
        .filter(|b| b["key"] == "offsite")
        .collect();
    assert!(
        offsite.iter().all(|b| b["status"] != "completed"),
        "{offsite:?}"
    );
}

#[test]
fn a_missing_bucket_or_container_is_named() {
    let (Some(s3), Some(az)) = (
        emulator("s3", "BACKPLAN_TEST_S3"),
        emulator("azurite", "BACKPLAN_TEST_AZURITE"),
    ) else {
        return;
    };
    let missing = unique("missing");
    let tmp = quickstart_with(&format!(
        "[storage.archive]\nkind = \"s3\"\nbucket = \"{missing}\"\nendpoint = \"{s3}\"\naccess_key_id = \"testing\"\nsecret_access_key_file = \"s3.secret\"\npassword_file = \"archive.key\"\n\n[storage.blobs]\nkind = \"azure\"\naccount = \"{AZ_ACCOUNT}\"\ncontainer = \"{missing}\"\nendpoint = \"{az}\"\naccess_key_file = \"azure.key\"\npassword_file = \"archive.key\"\n\n[instances.contoso.backups.offsite]\nstorage = \"archive\"\n\n[instances.contoso.backups.blobs]\nstorage = \"blobs\""
    ));
    let dir = tmp.path();
    write_secret(&dir.join("s3.secret"), "testing-secret\n");
    write_secret(&dir.join("azure.key"), AZ_KEY);
    let run = apply(dir);
    assert_ne!(run.code, 0, "{}", run.transcript());
    let out = run.transcript();
    assert!(
        out.contains(&format!("bucket `{missing}`")) && out.contains("does not exist"),
        "{out}"
    );
    assert!(out.contains(&format!("container `{missing}`")), "{out}");
}

#[test]
fn external_storage_without_a_password_file_or_with_an_inline_key_is_invalid() {
    let tmp = quickstart_copy();
    let dir = tmp.path();
    append_config(
        dir,
        "[storage.archive]\nkind = \"azure\"\naccount = \"acct\"\ncontainer = \"c\"\naccess_key_env = \"AZ_KEY\"\n\n[storage.inline]\nkind = \"s3\"\nbucket = \"b\"\naccess_key_id = \"id\"\nsecret_access_key = \"c2VjcmV0\"",
    );
    let run = backplan(dir, &["validate", "-c", "backplan.toml"]);
    assert_eq!(run.code, 1, "{}", run.transcript());
    let out = run.transcript();
    assert!(
        out.contains("[storage.archive] (kind `azure`) has no `password_file`"),
        "{out}"
    );
    assert!(out.contains("error[inline-secret]"), "{out}");
    assert!(!out.contains("c2VjcmV0"), "the secret is not echoed: {out}");
    // Every refusal names the file, line and column.
    assert!(out.contains("backplan.toml:43:10"), "{out}");
}

#[test]
fn a_folder_inside_the_container_must_stay_inside() {
    let tmp = quickstart_copy();
    let dir = tmp.path();
    write_secret(&dir.join("k"), "key");
    append_config(
        dir,
        "[storage.archive]\nkind = \"s3\"\nbucket = \"b\"\npath = \"a/../../other\"\naccess_key_id = \"id\"\nsecret_access_key_file = \"k\"\npassword_file = \"k\"",
    );
    let run = backplan(dir, &["validate", "-c", "backplan.toml"]);
    assert_eq!(run.code, 1, "{}", run.transcript());
    assert!(
        run.stderr
            .contains("is not a folder inside the container or bucket"),
        "{}",
        run.transcript()
    );
}

#[test]
fn storage_check_tries_credentials_container_and_a_round_trip() {
    let (Some(s3), Some(az)) = (
        emulator("s3", "BACKPLAN_TEST_S3"),
        emulator("azurite", "BACKPLAN_TEST_AZURITE"),
    ) else {
        return;
    };
    let bucket = unique("bp");
    create_bucket(&s3, &bucket);
    let container = unique("bp");
    create_container(&az, &container);
    let tmp = quickstart_with(&format!(
        "[storage.s3ok]\nkind = \"s3\"\nbucket = \"{bucket}\"\nendpoint = \"{s3}\"\naccess_key_id = \"testing\"\nsecret_access_key_file = \"s3.secret\"\npassword_file = \"archive.key\"\n\n[storage.s3missing]\nkind = \"s3\"\nbucket = \"{bucket}-missing\"\nendpoint = \"{s3}\"\naccess_key_id = \"testing\"\nsecret_access_key_file = \"s3.secret\"\npassword_file = \"archive.key\"\n\n[storage.azok]\nkind = \"azure\"\naccount = \"{AZ_ACCOUNT}\"\ncontainer = \"{container}\"\npath = \"repo\"\nendpoint = \"{az}\"\naccess_key_file = \"azure.key\"\npassword_file = \"archive.key\"\n\n[storage.azbad]\nkind = \"azure\"\naccount = \"{AZ_ACCOUNT}\"\ncontainer = \"{container}\"\nendpoint = \"{az}\"\naccess_key_file = \"bad.key\"\npassword_file = \"archive.key\"\n\n[storage.azdown]\nkind = \"azure\"\naccount = \"{AZ_ACCOUNT}\"\ncontainer = \"{container}\"\nendpoint = \"http://127.0.0.1:9/{AZ_ACCOUNT}\"\naccess_key_file = \"azure.key\"\npassword_file = \"archive.key\""
    ));
    let dir = tmp.path();
    write_secret(&dir.join("s3.secret"), "testing-secret\n");
    write_secret(&dir.join("azure.key"), AZ_KEY);
    write_secret(
        &dir.join("bad.key"),
        "bm90IHRoZSBrZXkgb2YgdGhpcyBhY2NvdW50IGF0IGFsbCwgc29ycnkgYWJvdXQgdGhhdA==",
    );
    let check = |name: &str| backplan(dir, &["storage", "check", "-c", "backplan.toml", name]);
    for ok in ["s3ok", "azok", "local"] {
        let run = check(ok);
        assert_eq!(run.code, 0, "{ok}: {}", run.transcript());
        assert!(run.stdout.contains("usable"), "{}", run.transcript());
    }
    // The test object is gone again; the repository's folder was not created.
    assert_eq!(blobs(&az, &container), Vec::<String>::new());
    for (bad, says) in [
        ("s3missing", "does not exist"),
        ("azbad", "refused the credentials"),
        ("azdown", "cannot be reached"),
        ("nosuch", "is not declared"),
    ] {
        let run = check(bad);
        assert_eq!(run.code, 1, "{bad}: {}", run.transcript());
        assert!(run.stderr.contains(says), "{bad}: {}", run.transcript());
    }
}

/// Issue 10's done-when: a backup kept in Azure outlives the expiry of the local backups,
/// restores into a sandbox, and once removed from the file it leaves backplan's catalogue
/// while its data stays in the container (`purge_on_delete` is off by default).
#[test]
fn an_azure_backup_outlives_local_expiry_and_stays_in_the_container_after_removal() {
    let Some(endpoint) = emulator("azurite", "BACKPLAN_TEST_AZURITE") else {
        return;
    };
    let container = unique("bp");
    create_container(&endpoint, &container);
    let tmp = quickstart_with(&format!(
        "[storage.archive]\nkind = \"azure\"\naccount = \"{AZ_ACCOUNT}\"\ncontainer = \"{container}\"\nendpoint = \"{endpoint}\"\naccess_key_env = \"BACKPLAN_TEST_AZ_KEY\"\npassword_file = \"archive.key\""
    ));
    let dir = tmp.path();
    // SAFETY: tests in this process read no other variable of this name.
    unsafe { std::env::set_var("BACKPLAN_TEST_AZ_KEY", AZ_KEY) };
    // Local backups expire after a second, and none is kept as the last good one.
    let text = std::fs::read_to_string(dir.join("backplan.toml")).unwrap();
    let text = text
        .replace(
            "retention = \"3d\"",
            "retention = \"1s\"\ndeletion_grace = \"1s\"",
        )
        .replace("keep_last_good = 1", "keep_last_good = 0");
    std::fs::write(dir.join("backplan.toml"), text).unwrap();
    backup_and_restore(dir);
    let snapshots_in_container =
        |names: &[String]| names.iter().filter(|n| n.starts_with("snapshots/")).count();
    assert_eq!(snapshots_in_container(&blobs(&endpoint, &container)), 1);

    // The local backups (the quickstart's own and the restore's safety backup) expire; the
    // archive's backup stays completed and restorable.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let run = apply(dir);
    assert_eq!(run.code, 0, "{}", run.transcript());
    let list = backups_json(dir);
    let local_left: Vec<_> = list
        .iter()
        .filter(|b| b["storage"] == "local" && b["status"] == "completed")
        .collect();
    assert!(local_left.is_empty(), "local backups expired: {list:?}");
    assert!(
        restic_snapshots(dir).is_empty(),
        "the local repository holds no snapshot any more"
    );
    let offsite: Vec<_> = list.iter().filter(|b| b["key"] == "offsite").collect();
    assert_eq!(offsite.len(), 1, "{list:?}");
    assert_eq!(offsite[0]["status"], "completed", "{list:?}");

    // Restored again after the expiry, into the sandbox.
    std::fs::remove_dir_all(dir.join("data/contoso-sandbox")).unwrap();
    std::fs::create_dir(dir.join("data/contoso-sandbox")).unwrap();
    let text = std::fs::read_to_string(dir.join("backplan.toml")).unwrap();
    let text = text.replace("[restores.from-archive]", "[restores.again-from-archive]");
    std::fs::write(dir.join("backplan.toml"), text).unwrap();
    let run = apply(dir);
    assert_eq!(run.code, 0, "{}", run.transcript());
    assert_same_tree(&dir.join("expected"), &dir.join("data/contoso-sandbox"));

    // Removed from the file: the plan says the data stays; after the grace the backup leaves
    // the catalogue, and its snapshot is still in the container.
    let text = std::fs::read_to_string(dir.join("backplan.toml")).unwrap();
    let text = text
        .replace(
            "[instances.contoso.backups.offsite]\nlabel = \"Off the host\"\nstorage = \"archive\"",
            "",
        )
        .replace(
            "[restores.again-from-archive]\nfrom = \"contoso/offsite\"\nto = \"contoso-sandbox\"",
            "",
        );
    assert!(!text.contains("offsite"), "{text}");
    std::fs::write(dir.join("backplan.toml"), text).unwrap();
    let run = apply(dir);
    assert_eq!(run.code, 0, "{}", run.transcript());
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let run = apply(dir);
    assert_eq!(run.code, 0, "{}", run.transcript());
    let list = backups_json(dir);
    let offsite: Vec<_> = list.iter().filter(|b| b["key"] == "offsite").collect();
    assert!(
        offsite.iter().all(|b| b["status"] != "completed"),
        "left the catalogue: {list:?}"
    );
    assert_eq!(
        snapshots_in_container(&blobs(&endpoint, &container)),
        1,
        "its data stays in the container"
    );
}
