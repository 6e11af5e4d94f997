//! tracefs: finding (or mounting) it, and reading tracepoint field layouts from its
//! `format` files, so no kernel's layout is hard-coded.
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    #[error("tracefs is not mounted and mounting it on /sys/kernel/tracing failed ({0}): run `mount -t tracefs tracefs /sys/kernel/tracing`")]
    Mount(nix::Error),
    /// Mounted, but this process may not look inside (tracefs is root's, 0700).
    #[error("tracefs is mounted on {0} but not readable (permission denied): portwatch needs CAP_DAC_READ_SEARCH, or to run as root")]
    Unreadable(PathBuf),
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("tracepoint {tracepoint} has no field `{field}` in its format file")]
    MissingField {
        tracepoint: String,
        field: &'static str,
    },
    #[error("sys_exit_accept and sys_exit_accept4 disagree on the offset of ret ({accept} vs {accept4})")]
    AcceptRetDisagrees { accept: u32, accept4: u32 },
    /// The UDP syscall tracepoints' records are not laid out alike (the
    /// arguments 8 bytes apart from one place, `ret` at one place).
    #[error("tracepoint {tracepoint}: field `{field}` at offset {found}, expected {expected}")]
    SyscallLayout {
        tracepoint: String,
        field: &'static str,
        found: u32,
        expected: u32,
    },
}

const MOUNT_POINT: &str = "/sys/kernel/tracing";
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

/// The tracefs root, mounting it on /sys/kernel/tracing where it is not mounted.
pub fn ensure_mounted() -> Result<PathBuf, TracefsError> {
    for root in [MOUNT_POINT, DEBUGFS_TRACING] {
        match Path::new(root).join("events").metadata() {
            Ok(m) if m.is_dir() => return Ok(root.into()),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return Err(TracefsError::Unreadable(root.into()))
            }
            _ => {}
        }
    }
    nix::mount::mount(
        Some("tracefs"),
        MOUNT_POINT,
        Some("tracefs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(TracefsError::Mount)?;
    Ok(MOUNT_POINT.into())
}

/// One field of a tracepoint record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    pub offset: u32,
    pub size: u32,
}

/// The fields of one tracepoint, by name.
#[derive(Clone, Debug, Default)]
pub struct Format {
    pub tracepoint: String,
    fields: HashMap<String, Field>,
}

impl Format {
    /// Parse a tracefs `format` file: lines like
    /// `field:__u8 saddr_v6[16]; offset:40; size:16; signed:0;`.
    pub fn parse(tracepoint: &str, text: &str) -> Format {
        let mut fields = HashMap::new();
        for line in text.lines() {
            let mut decl = None;
            let mut offset = None;
            let mut size = None;
            for part in line.trim().split(';') {
                let part = part.trim();
                if let Some(d) = part.strip_prefix("field:") {
                    decl = Some(d);
                } else if let Some(o) = part.strip_prefix("offset:") {
                    offset = o.parse().ok();
                } else if let Some(s) = part.strip_prefix("size:") {
                    size = s.parse().ok();
                }
            }
            if let (Some(decl), Some(offset), Some(size)) = (decl, offset, size) {
                let name = decl.split_whitespace().last().unwrap_or("");
                let name = name.split('[').next().unwrap_or(name);
                fields.insert(name.to_string(), Field { offset, size });
            }
        }
        Format {
            tracepoint: tracepoint.to_string(),
            fields,
        }
    }

    pub fn read(root: &Path, category: &str, name: &str) -> Result<Format, TracefsError> {
        let path = root.join("events").join(category).join(name).join("format");
        let text = std::fs::read_to_string(&path).map_err(|source| TracefsError::Read {
            path: path.clone(),
            source,
        })?;
        Ok(Format::parse(&format!("{category}:{name}"), &text))
    }

    pub fn field(&self, name: &'static str) -> Result<Field, TracefsError> {
        self.fields
            .get(name)
            .copied()
            .ok_or_else(|| TracefsError::MissingField {
                tracepoint: self.tracepoint.clone(),
                field: name,
            })
    }

    pub fn offset(&self, name: &'static str) -> Result<u32, TracefsError> {
        self.field(name).map(|f| f.offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INET_SOCK_SET_STATE: &str = "name: inet_sock_set_state
ID: 2287
format:
	field:unsigned short common_type;	offset:0;	size:2;	signed:0;
	field:int common_pid;	offset:4;	size:4;	signed:1;

	field:const void * skaddr;	offset:8;	size:8;	signed:0;
	field:int oldstate;	offset:16;	size:4;	signed:1;
	field:__u16 sport;	offset:24;	size:2;	signed:0;
	field:__u8 saddr_v6[16];	offset:40;	size:16;	signed:0;

print fmt: \"family=%s protocol=%s\", REC->family
";

    #[test]
    fn parses_names_offsets_and_sizes() {
        let f = Format::parse("sock:inet_sock_set_state", INET_SOCK_SET_STATE);
        assert_eq!(f.field("skaddr").unwrap(), Field { offset: 8, size: 8 });
        assert_eq!(f.offset("oldstate").unwrap(), 16);
        assert_eq!(f.offset("sport").unwrap(), 24);
        assert_eq!(
            f.field("saddr_v6").unwrap(),
            Field {
                offset: 40,
                size: 16
            }
        );
        assert_eq!(f.offset("common_pid").unwrap(), 4);
        match f.offset("daddr_v6") {
            Err(TracefsError::MissingField { tracepoint, field }) => {
                assert_eq!(tracepoint, "sock:inet_sock_set_state");
                assert_eq!(field, "daddr_v6");
            }
            other => panic!("expected a missing field, got {other:?}"),
        }
    }
}
