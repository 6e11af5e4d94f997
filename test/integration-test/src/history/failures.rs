//! What `record` and `query` do with what goes wrong: files that are not
//! portwatch databases, directories that cannot be made, missing privileges, a
//! database locked by another writer or on a read-only file system, a full disk,
//! and `kill -9` in the middle of a storm: one line, the right exit code, nothing
//! already stored lost.
use std::{path::Path, thread, time::Duration};

use anyhow::{Context, Result};

use super::{fresh_db, query, record, stop, COMMITTED};
use crate::{
    harness::{
        helpers::LOOPBACK,
        launch::{Finished, Launch},
        stderr::Line,
    },
    sock,
};

/// Exit 1 and one error line containing `text`; else what `what` did instead.
fn one_error(out: &Finished, text: &str, what: &str) -> Option<String> {
    match (out.status.code(), out.stderr.single_line()) {
        (Some(1), Some(Line::Error(m))) if m.contains(text) => None,
        (code, _) => Some(format!("{what}: exit {code:?}, {}", out.stderr)),
    }
}

/// A file that is not a portwatch database, a directory that cannot be made,
/// a missing file: each refused with one error line and exit 1; the file as it
/// was.
pub(super) fn bad_files(portwatch: &str, mode: &str) -> Result<Vec<String>> {
    let mut failures = Vec::new();
    let db = fresh_db("bad")?;
    std::fs::create_dir_all(db.parent().context("no parent")?)?;
    let junk = vec![b'x'; 8192];
    std::fs::write(&db, &junk)?;
    for args in [vec!["record"], vec!["query"]] {
        let out = Launch::new(portwatch)
            .args(&args)
            .arg("--db")
            .arg(&db)
            .run()?;
        failures.extend(one_error(
            &out,
            "not a portwatch database",
            &format!("{args:?} on a junk file"),
        ));
    }
    if std::fs::read(&db)? != junk {
        failures.push("the junk file was changed".into());
    }
    failures.extend(unprivileged(portwatch, mode, &db)?);
    let missing = db.with_file_name("missing.db");
    let out = Launch::new(portwatch)
        .args(["query", "--db"])
        .arg(&missing)
        .run()?;
    if out.status.code() != Some(1) || !out.stderr.mentions("no such database") || missing.exists()
    {
        failures.push(format!(
            "query of a missing file: exit {:?}, {}",
            out.status.code(),
            out.stderr
        ));
    }
    Ok(failures)
}

/// A directory that cannot be made (its parent is a file): one line, exit 1. As
/// an unprivileged user: recording is refused for want of privileges before any
/// file is made; querying a database it may read works (no root needed).
fn unprivileged(portwatch: &str, mode: &str, junk: &Path) -> Result<Vec<String>> {
    let mut failures = Vec::new();
    let out = Launch::new(portwatch)
        .args(["record", "--db"])
        .arg(junk.join("sub/h.db"))
        .run()?;
    failures.extend(one_error(
        &out,
        "cannot create its directory",
        "record under a file",
    ));
    let (dir, copy) = crate::failures::reachable_copy(portwatch, "history")?;
    let copy = copy.to_str().context("temporary path")?;
    let open = dir.join("open");
    std::fs::create_dir_all(&open)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777))?;
    let out = Launch::new(copy)
        .args(["record", "--db"])
        .arg(open.join("h.db"))
        .run_as(65534, 65534)
        .run()?;
    failures.extend(one_error(
        &out,
        "needs root",
        "record as an unprivileged user",
    ));
    if std::fs::read_dir(&open)?.next().is_some() {
        failures.push("record as an unprivileged user left a file behind".to_string());
    }
    // A recorded database, readable by all, in a directory nobody but root writes.
    let db = dir.join("readable.db");
    let recording = record(portwatch, mode, &db, &["--port", "1"])?;
    thread::sleep(COMMITTED);
    failures.extend(stop(recording)?);
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644))?;
    let out = Launch::new(copy)
        .args(["query", "--format", "json", "--db"])
        .arg(&db)
        .run_as(65534, 65534)
        .run()?;
    if !out.status.success() {
        failures.push(format!(
            "query as an unprivileged user: exit {}, {}",
            out.status, out.stderr
        ));
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(failures)
}

/// A storm recorded, then `kill -9` a while after it ended: the database opens,
/// and every connection of the storm is in it (both sides and the listener).
pub(super) fn killed(portwatch: &str, loadgen: &str, mode: &str) -> Result<Vec<String>> {
    const CONNECTIONS: usize = 5_000;
    let db = fresh_db("killed")?;
    let port = sock::unused_port(LOOPBACK)?;
    let recording = record(portwatch, mode, &db, &["--port", &port.to_string()])?;
    crate::heavy::load(loadgen, CONNECTIONS as u64, port)?;
    thread::sleep(COMMITTED);
    let stopped = recording.stop_with(nix::sys::signal::Signal::SIGKILL)?;
    let mut failures = Vec::new();
    if stopped.status.code().is_some() {
        failures.push(format!("record was not killed: {}", stopped.status));
    }
    // Every socket of the storm: the listener and both sides of each connection.
    // (Their roles are not judged here: a run the kernel skipped can leave a
    // server side's role to be guessed from its ports, which the scale tests
    // account for.)
    let stored = query(portwatch, &db, &["--port", &port.to_string()])?;
    let count = |role: &str| stored.iter().filter(|e| e["role"] == role).count();
    if stored.len() != 2 * CONNECTIONS + 1 || count("listener") != 1 {
        failures.push(format!(
            "{} sockets stored ({} listeners, {} clients, {} servers), expected {} (1 listener)",
            stored.len(),
            count("listener"),
            count("client"),
            count("server"),
            2 * CONNECTIONS + 1
        ));
    }
    Ok(failures)
}

/// A recording on a 256 KiB file system: a few connections stored, then more load
/// than the disk holds.
pub(super) fn disk_full(portwatch: &str, loadgen: &str, mode: &str) -> Result<Vec<String>> {
    use nix::mount::umount;
    let db = fresh_db("full")?;
    let dir = db.parent().context("no parent")?.to_path_buf();
    std::fs::create_dir_all(&dir)?;
    tmpfs(&dir, "256k")?;
    let result = (|| -> Result<Vec<String>> {
        let port = sock::unused_port(LOOPBACK)?;
        let mut recording = record(portwatch, mode, &db, &["--port", &port.to_string()])?;
        // Some stored first, then more than the disk holds.
        const FIRST: usize = 20;
        crate::heavy::load(loadgen, FIRST as u64, port)?;
        thread::sleep(COMMITTED);
        crate::heavy::load(loadgen, 5_000, port)?;
        let mut failures = Vec::new();
        let Some(status) = recording.wait_exit(Duration::from_secs(20), || {})? else {
            failures.push("record went on with a full disk".into());
            return Ok(failures);
        };
        let stopped = recording.finished(status)?;
        let errors = stopped.stderr.errors()?;
        match (status.code(), errors.as_slice()) {
            (Some(1), [one]) if one.contains("full") => {}
            (code, _) => failures.push(format!("exit {code:?}, stderr: {}", stopped.stderr)),
        }
        let stored = query(portwatch, &db, &["--port", &port.to_string()])?;
        let clients = stored.iter().filter(|e| e["role"] == "client").count();
        if clients < FIRST {
            failures.push(format!(
                "{clients} client sockets readable after the disk filled, expected the first {FIRST} at least"
            ));
        }
        Ok(failures)
    })();
    let _ = umount(&dir);
    result
}

/// `portwatch record --db DB` refused: exit 1, one error line containing `text`.
fn refused_record(portwatch: &str, db: &Path, text: &str, what: &str) -> Result<Option<String>> {
    let out = Launch::new(portwatch)
        .args(["record", "--db"])
        .arg(db)
        .run()?;
    Ok(one_error(&out, text, what))
}

/// A tmpfs of `size` on `dir`.
fn tmpfs(dir: &Path, size: &str) -> Result<()> {
    use nix::mount::{mount, MsFlags};
    let options = format!("size={size}");
    mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        MsFlags::empty(),
        Some(options.as_str()),
    )?;
    Ok(())
}

/// A short recording into `db`, so that it holds a run.
fn one_run(portwatch: &str, mode: &str, db: &Path) -> Result<Vec<String>> {
    let recording = record(portwatch, mode, db, &["--port", "1"])?;
    thread::sleep(COMMITTED);
    stop(recording)
}

/// The runs recorded in `db`, read from the file alone (nothing writes it now; a
/// read-only file system could not take SQLite's WAL index).
fn runs_in(db: &Path) -> Result<i64> {
    use rusqlite::OpenFlags;
    let uri = format!("file:{}?immutable=1", db.display());
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI;
    let conn = rusqlite::Connection::open_with_flags(uri, flags)?;
    Ok(conn.query_row("SELECT count(*) FROM runs", [], |r| r.get(0))?)
}

/// Another writer holding the database's lock (SQLite's own, as a `sqlite3` shell
/// in a transaction would), then the database on a file system remounted
/// read-only: each refused with one line and exit 1, the recorded run still there.
pub(super) fn locked_and_read_only(portwatch: &str, mode: &str) -> Result<Vec<String>> {
    use nix::mount::{mount, umount, MsFlags};
    let db = fresh_db("locked")?;
    let dir = db.parent().context("no parent")?.to_path_buf();
    std::fs::create_dir_all(&dir)?;
    let mut failures = one_run(portwatch, mode, &db)?;
    {
        let holder = rusqlite::Connection::open(&db)?;
        holder.execute_batch("BEGIN EXCLUSIVE;")?;
        failures.extend(refused_record(
            portwatch,
            &db,
            "locked by another writer",
            "record on a locked database",
        )?);
        holder.execute_batch("ROLLBACK;")?;
    }
    tmpfs(&dir, "4m")?;
    let result = (|| -> Result<Vec<String>> {
        let mut failures = one_run(portwatch, mode, &db)?;
        mount(
            None::<&str>,
            &dir,
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )?;
        failures.extend(refused_record(
            portwatch,
            &db,
            "read-only",
            "record on a read-only file system",
        )?);
        if runs_in(&db)? != 1 {
            failures.push("the recorded run is gone from the read-only database".into());
        }
        Ok(failures)
    })();
    let _ = umount(&dir);
    failures.extend(result?);
    if runs_in(&db)? != 1 {
        failures.push("the locked database lost its run".into());
    }
    Ok(failures)
}
