//! cgroup v2 ids (what the kernel side records) to paths, and container ids from
//! those paths.
use std::{
    collections::HashMap,
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// Where cgroup v2 is mounted (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on
/// hybrid hosts), from a mounts table.
pub fn cgroup2_mount(mounts: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|line| {
        let mut f = line.split_whitespace();
        let (_, point, fstype) = (f.next()?, f.next()?, f.next()?);
        (fstype == "cgroup2").then(|| PathBuf::from(point))
    })
}

/// This host's cgroup v2 mount point, from /proc/self/mounts.
pub fn cgroup2_root() -> Option<PathBuf> {
    fs::read_to_string("/proc/self/mounts")
        .ok()
        .and_then(|m| cgroup2_mount(&m))
}

/// A process's cgroup v2 path (/proc/PID/cgroup) and that cgroup's id (the inode
/// number of its directory under `root`).
pub fn of_process(root: &Path, pid: u32) -> Option<(String, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let path = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))?
        .to_string();
    let id = fs::metadata(root.join(path.trim_start_matches('/')))
        .ok()?
        .ino();
    Some((path, id))
}

/// The container id in a cgroup path: a 64-hex-digit name as Docker, containerd,
/// CRI-O and Podman write them (`docker-<id>.scope`, `/docker/<id>`,
/// `cri-containerd-<id>.scope`, `crio-<id>.scope`, `libpod-<id>.scope`).
pub fn container_id(path: &str) -> Option<String> {
    path.rsplit('/').find_map(|segment| {
        let s = segment.strip_suffix(".scope").unwrap_or(segment);
        let s = [
            "docker-",
            "cri-containerd-",
            "crio-",
            "libpod-",
            "containerd-",
        ]
        .iter()
        .find_map(|p| s.strip_prefix(p))
        .unwrap_or(s);
        (s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())).then(|| s.to_string())
    })
}

/// cgroup id -> path ("/" for the root), by walking cgroupfs; rebuilt on a miss, at
/// most once a second, and never holding more than `MAX` entries.
pub struct CgroupIndex {
    root: Option<PathBuf>,
    paths: HashMap<u64, String>,
    last_scan: Option<Instant>,
}

const MAX: usize = 100_000;

impl CgroupIndex {
    pub fn new() -> CgroupIndex {
        CgroupIndex {
            root: cgroup2_root(),
            paths: HashMap::new(),
            last_scan: None,
        }
    }

    fn scan(&mut self) {
        self.paths.clear();
        self.last_scan = Some(Instant::now());
        let Some(root) = self.root.clone() else {
            return;
        };
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            if self.paths.len() >= MAX {
                break;
            }
            let Ok(meta) = fs::metadata(&dir) else {
                continue;
            };
            let rel = dir.strip_prefix(&root).unwrap_or(Path::new(""));
            self.paths.insert(meta.ino(), format!("/{}", rel.display()));
            if let Ok(entries) = fs::read_dir(&dir) {
                stack.extend(
                    entries
                        .filter_map(Result::ok)
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .map(|e| e.path()),
                );
            }
        }
    }

    /// The path of cgroup `id`, for a process `pid` that may still be in it: its
    /// /proc/PID/cgroup, checked against the id, else the index.
    pub fn path_for(&mut self, id: u64, pid: u32) -> Option<String> {
        if let Some(p) = self.paths.get(&id) {
            return Some(p.clone());
        }
        let from_proc = self
            .root
            .as_deref()
            .and_then(|root| of_process(root, pid))
            .and_then(|(path, ino)| (ino == id).then_some(path));
        if let Some(path) = from_proc {
            if self.paths.len() < MAX {
                self.paths.insert(id, path.clone());
            }
            return Some(path);
        }
        self.path(id)
    }

    pub fn path(&mut self, id: u64) -> Option<String> {
        if let Some(p) = self.paths.get(&id) {
            return Some(p.clone());
        }
        let stale = self
            .last_scan
            .is_none_or(|t| t.elapsed() > Duration::from_secs(1));
        if stale {
            self.scan();
        }
        self.paths.get(&id).cloned()
    }
}

impl Default for CgroupIndex {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn container_ids_from_runtime_paths() {
        for path in [
            format!("/system.slice/docker-{ID}.scope"),
            format!("/docker/{ID}"),
            format!("/kubepods.slice/kubepods-burstable.slice/cri-containerd-{ID}.scope"),
            format!("/machine.slice/libpod-{ID}.scope/container"),
            format!("/crio-{ID}.scope"),
        ] {
            assert_eq!(container_id(&path).as_deref(), Some(ID), "{path}");
        }
        assert_eq!(
            container_id("/user.slice/user-1000.slice/session-2.scope"),
            None
        );
        assert_eq!(container_id("/"), None);
        assert_eq!(container_id(&format!("/docker-{}.scope", &ID[..63])), None);
    }

    #[test]
    fn finds_the_cgroup2_mount() {
        let hybrid = "cgroup /sys/fs/cgroup/cpu cgroup rw 0 0\ncgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n";
        assert_eq!(cgroup2_mount(hybrid), Some("/sys/fs/cgroup/unified".into()));
        assert_eq!(cgroup2_mount("proc /proc proc rw 0 0\n"), None);
    }
}
