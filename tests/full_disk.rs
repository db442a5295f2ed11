//! A real full disk and a read-only folder (fault-matrix row 7, harness LOOP): a small ext4
//! image is loop-mounted, filled by appends until the file system refuses, then space is freed.
//! Needs root, `mkfs.ext4` and loop devices (`.ci/run` installs the tools; CI runs as root).
//! Without them the test says so and does nothing.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use streamlog::{Error, EventData, ExpectedVersion, Options, Store};

struct Mounted {
    point: PathBuf,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.point).status();
    }
}

fn run(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A fresh ext4 file system of `mib` MiB mounted at `dir/mnt`, or `None` when this machine
/// cannot make one.
fn mount_ext4(dir: &Path, mib: u64) -> Option<Mounted> {
    // SAFETY: `geteuid` has no preconditions and touches no memory of ours.
    #[allow(unsafe_code)]
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("not root: skipping the loop-mounted full disk test");
        return None;
    }
    let image = dir.join("disk.img");
    let point = dir.join("mnt");
    std::fs::create_dir(&point).unwrap();
    let file = std::fs::File::create(&image).unwrap();
    file.set_len(mib << 20).unwrap();
    let image = image.to_str().unwrap();
    if !run("mkfs.ext4", &["-q", "-F", image]) {
        eprintln!("mkfs.ext4 failed or is missing: skipping the full disk test");
        return None;
    }
    if !run("mount", &["-o", "loop", image, point.to_str().unwrap()]) {
        eprintln!("cannot loop-mount: skipping the full disk test");
        return None;
    }
    Some(Mounted { point })
}

fn options() -> Options {
    Options {
        segment_bytes: 1 << 20,
        event_bytes_max: 64 << 10,
        index_entries_per_file: 16_384,
        ..Options::default()
    }
}

#[test]
fn a_full_disk_fails_the_batch_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mnt) = mount_ext4(dir.path(), 32) else {
        return;
    };
    // Room to free later.
    let filler = mnt.point.join("filler");
    std::fs::write(&filler, vec![7u8; 4 << 20]).unwrap();
    let path = mnt.point.join("store");
    let mut acked: Vec<(String, u64, Vec<u8>)> = Vec::new();
    let store = Store::open_with(&path, options()).unwrap();
    let error = (0u64..100_000)
        .find_map(|i| {
            let stream = format!("s-{}", i % 7);
            let data = vec![(i % 251) as u8; 4000 + (i as usize % 97)];
            match store.append(
                &stream,
                ExpectedVersion::Any,
                [EventData::new("E", data.clone())],
            ) {
                Ok(r) => {
                    acked.push((stream, r.first_position.get(), data));
                    None
                }
                Err(e) => Some(e),
            }
        })
        .expect("a 32 MiB disk fills up");
    assert!(
        acked.len() > 1000,
        "the disk filled after {} appends",
        acked.len()
    );
    let Error::Poisoned { cause } = &error else {
        panic!("a failed write poisons the handle: {error}");
    };
    eprintln!("full after {} appends: {cause}", acked.len());
    assert!(
        cause.contains("No space left"),
        "the cause names the full disk: {cause}"
    );
    // Reads keep working on the poisoned handle; writes stay refused, even with space again.
    assert_eq!(all(&store).len(), acked.len());
    std::fs::remove_file(&filler).unwrap();
    assert!(matches!(
        store.append("s-0", ExpectedVersion::Any, [EventData::new("E", vec![1])]),
        Err(Error::Poisoned { .. })
    ));
    drop(store);
    let store = Store::open_with(&path, options()).unwrap();
    check_invariants(&store);
    let all = all(&store);
    for (stream, position, data) in &acked {
        let (s, _, p, d) = &all[*position as usize - 1];
        assert_eq!((s, p, d), (stream, position, data));
    }
    for i in 0..100 {
        store
            .append(
                "after",
                ExpectedVersion::Any,
                [EventData::new("E", vec![i; 4000])],
            )
            .unwrap();
    }
    check_invariants(&store);
}

#[test]
fn a_read_only_folder_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mnt) = mount_ext4(dir.path(), 8) else {
        return;
    };
    let path = mnt.point.join("store");
    {
        let store = Store::open(&path).unwrap();
        store
            .append("s", ExpectedVersion::Any, [EventData::new("E", vec![1])])
            .unwrap();
    }
    assert!(run(
        "mount",
        &["-o", "remount,ro", mnt.point.to_str().unwrap()]
    ));
    let e = Store::open(&path).unwrap_err();
    let Error::Io { source, .. } = &e else {
        panic!("expected an I/O error, got {e}");
    };
    assert_eq!(source.raw_os_error(), Some(libc::EROFS), "{e}");
    assert!(e.to_string().contains("Read-only file system"), "{e}");
    assert!(run(
        "mount",
        &["-o", "remount,rw", mnt.point.to_str().unwrap()]
    ));
    let store = Store::open(&path).unwrap();
    assert_eq!(stream_data(&store, "s"), vec![vec![1]]);
}
