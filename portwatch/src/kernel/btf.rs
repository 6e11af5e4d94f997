//! Kernel struct member offsets, read from the running kernel's BTF at load time.
use std::collections::HashMap;

use btf_rs::{Btf, Type};

use portwatch_common::{Config, ConfigFlag, Offset, OffsetSource};

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("reading kernel BTF ({VMLINUX_BTF})")]
    Read(#[source] btf_rs::Error),
    #[error("kernel BTF has no struct {0}")]
    NoStruct(String),
    #[error("kernel BTF: struct {0} has no member {1}")]
    NoMember(String, String),
    #[error("kernel BTF: {0}.{1} is a bitfield")]
    Bitfield(String, String),
}

pub fn load_vmlinux() -> Result<Btf, BtfError> {
    // Mapped, not parsed whole, where the kernel lets sysfs BTF be mapped (recent
    // kernels): a few lookups do not need all the kernel's types in memory.
    // Elsewhere, read and parsed.
    Btf::from_file_with_backend(VMLINUX_BTF, btf_rs::Backend::Mmap)
        .or_else(|_| Btf::from_file_with_backend(VMLINUX_BTF, btf_rs::Backend::Cache))
        .map_err(BtfError::Read)
}

fn strip(btf: &Btf, mut ty: Type) -> Type {
    // Follow typedefs and qualifiers to the underlying type.
    for _ in 0..16 {
        let next = match &ty {
            Type::Typedef(t) => btf.resolve_chained_type(t),
            Type::Const(t) | Type::Volatile(t) | Type::Restrict(t) => btf.resolve_chained_type(t),
            Type::TypeTag(t) => btf.resolve_chained_type(t),
            _ => return ty,
        };
        match next {
            Ok(n) => ty = n,
            Err(_) => return ty,
        }
    }
    ty
}

/// Kernel structs by name, each looked up once: finding a type by name scans all of
/// the kernel's types.
pub struct Structs<'b> {
    btf: &'b Btf,
    by_name: HashMap<String, btf_rs::Struct>,
}

impl<'b> Structs<'b> {
    pub fn new(btf: &'b Btf) -> Self {
        Structs {
            btf,
            by_name: HashMap::new(),
        }
    }

    fn get(&mut self, name: &str) -> Result<btf_rs::Struct, BtfError> {
        if let Some(s) = self.by_name.get(name) {
            return Ok(s.clone());
        }
        let found = self
            .btf
            .resolve_types_by_name(name)
            .unwrap_or_default()
            .into_iter()
            .find_map(|t| match t {
                Type::Struct(s) if !s.members.is_empty() => Some(s),
                _ => None,
            })
            .ok_or_else(|| BtfError::NoStruct(name.into()))?;
        self.by_name.insert(name.to_string(), found.clone());
        Ok(found)
    }

    /// Byte offset of `path` (members separated by dots) from the start of `struct
    /// root`.
    pub fn offset_of(&mut self, root: &str, path: &str) -> Result<u32, BtfError> {
        let s = self.get(root)?;
        offset_in(self.btf, s, root, path)
    }
}

/// Bit offset of `member` in `s`, looking through anonymous structs and unions.
fn member_bits(btf: &Btf, s: &btf_rs::Struct, member: &str) -> Option<(u32, bool)> {
    for m in &s.members {
        let name = btf.resolve_name(m).unwrap_or_default();
        if name == member {
            return Some((m.bit_offset(), m.bitfield_size().unwrap_or(0) != 0));
        }
        if name.is_empty() {
            if let Ok(t) = btf.resolve_chained_type(m) {
                if let Type::Struct(inner) | Type::Union(inner) = strip(btf, t) {
                    if let Some((bits, bf)) = member_bits(btf, &inner, member) {
                        return Some((m.bit_offset() + bits, bf));
                    }
                }
            }
        }
    }
    None
}

/// Byte offset of `path` (members separated by dots) from the start of `s`, the
/// struct named `root`.
fn offset_in(btf: &Btf, mut s: btf_rs::Struct, root: &str, path: &str) -> Result<u32, BtfError> {
    let mut total = 0u32;
    let parts: Vec<&str> = path.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let (bits, bitfield) = member_bits(btf, &s, part)
            .ok_or_else(|| BtfError::NoMember(root.into(), path.into()))?;
        if bitfield || bits % 8 != 0 {
            return Err(BtfError::Bitfield(root.into(), path.into()));
        }
        total += bits / 8;
        if i + 1 < parts.len() {
            // Descend into the member's struct type.
            let next = s
                .members
                .iter()
                .find(|m| btf.resolve_name(*m).unwrap_or_default() == *part)
                .and_then(|m| btf.resolve_chained_type(m).ok())
                .map(|t| strip(btf, t));
            s = match next {
                Some(Type::Struct(inner)) => inner,
                _ => return Err(BtfError::NoMember(root.into(), path.into())),
            };
        }
    }
    Ok(total)
}

/// BTF id of kernel function `name`.
pub fn function_id(btf: &Btf, name: &str) -> Option<u32> {
    btf.resolve_ids_by_name(name)
        .ok()?
        .into_iter()
        .find(|id| matches!(btf.resolve_type_by_id(*id), Ok(Type::Func(_))))
}

/// BTF id of typedef `name` (a BTF tracepoint's `btf_trace_NAME`).
pub fn typedef_id(btf: &Btf, name: &str) -> Option<u32> {
    btf.resolve_ids_by_name(name)
        .ok()?
        .into_iter()
        .find(|id| matches!(btf.resolve_type_by_id(*id), Ok(Type::Typedef(_))))
}

/// How many parameters kernel function `name` takes (its BTF prototype).
pub fn function_arg_count(btf: &Btf, name: &str) -> Option<u32> {
    let Type::Func(f) = btf.resolve_type_by_id(function_id(btf, name)?).ok()? else {
        return None;
    };
    match btf.resolve_chained_type(&f).ok()? {
        Type::FuncProto(p) => Some(p.parameters.len() as u32),
        _ => None,
    }
}

/// What the kernel side can do with this kernel's BTF, and what it could not.
pub struct BtfOffsets {
    pub warnings: Vec<String>,
}

/// What users lose when a feature's offsets are not in the kernel's BTF; None
/// where nothing visible is lost.
fn without(feature: ConfigFlag) -> Option<&'static str> {
    match feature {
        ConfigFlag::SockFields => {
            Some("accepted connections are attributed to the listener's owner (pid_exact: false)")
        }
        ConfigFlag::FdWalk => Some(
            "in tracepoint mode, accepted connections are attributed to the listener's owner (pid_exact: false)",
        ),
        ConfigFlag::TaskFields => Some(
            "events carry no parent pid, and process details cannot be checked against pid reuse",
        ),
        ConfigFlag::SkErr => Some("connect failures carry no reason"),
        ConfigFlag::UdpFields => Some("UDP is not traced"),
        ConfigFlag::NetNs => Some(
            "events carry no network namespace, and closes the kernel does not report are inferred only for snapshot sockets",
        ),
        // A bitfield before Linux 5.6; then accept() relies on the family check alone.
        ConfigFlag::SkProtocol => None,
        ConfigFlag::AcceptHooked | ConfigFlag::SockStorage | ConfigFlag::AcceptsPending => None,
    }
}

/// Fill in every BTF offset of `config` (the one list in `portwatch_common::Offset`)
/// and the feature flags: a feature is switched on only when every offset it
/// needs was found.
pub fn fill_config(btf: Option<&Btf>, config: &mut Config) -> BtfOffsets {
    let mut warnings = Vec::new();
    let Some(btf) = btf else {
        warnings.push(
            "no kernel BTF: accepted connections are attributed to the listener's owner (pid_exact: false) and connect failures carry no reason".into(),
        );
        return BtfOffsets { warnings };
    };
    let mut structs = Structs::new(btf);
    for feature in ConfigFlag::ALL {
        let mut found = Vec::new();
        let mut failure = None;
        for offset in Offset::ALL {
            let OffsetSource::Btf {
                ty,
                path,
                feature: f,
            } = offset.source()
            else {
                continue;
            };
            if f != feature {
                continue;
            }
            match structs.offset_of(ty, path) {
                Ok(value) => found.push((offset, value)),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        match failure {
            None if !found.is_empty() => {
                for (offset, value) in found {
                    config.offsets.set(offset, value);
                }
                config.flags |= feature.bit();
            }
            None => {}
            Some(e) => warnings.extend(without(feature).map(|cost| format!("{e}: {cost}"))),
        }
    }
    BtfOffsets { warnings }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every BTF offset of the one list, from this machine's kernel: each feature
    /// on, and members where `struct sock` and `task_struct` really have them.
    #[test]
    fn this_kernel_gives_every_offset() {
        let btf = load_vmlinux().expect("this machine's kernel has BTF");
        let mut config = Config::default();
        let filled = fill_config(Some(&btf), &mut config);
        assert_eq!(filled.warnings, Vec::<String>::new());
        for feature in [
            ConfigFlag::SockFields,
            ConfigFlag::FdWalk,
            ConfigFlag::TaskFields,
            ConfigFlag::SkErr,
            ConfigFlag::SkProtocol,
            ConfigFlag::NetNs,
        ] {
            assert!(feature.is_set(config.flags), "{feature:?} is off");
        }
        assert!(!ConfigFlag::AcceptHooked.is_set(config.flags));
        let o = config.offsets;
        // sock_common sits at the start of struct sock: daddr first.
        assert_eq!(o.skc_daddr, 0);
        // inet_sock begins with its struct sock: its own members come after.
        assert!(o.inet_sport > o.skc_v6_rcv_saddr && o.inet_saddr > o.skc_v6_rcv_saddr);
        assert!(o.skc_cookie > 0);
        assert!(o.sk_err > o.skc_v6_rcv_saddr);
        assert!(o.task_tgid > 0 && o.task_real_parent > 0 && o.task_start_boottime > 0);
        let mut structs = Structs::new(&btf);
        assert!(matches!(
            structs.offset_of("sock", "no_such_member"),
            Err(BtfError::NoMember(..))
        ));
        assert!(matches!(
            structs.offset_of("no_such_struct_here", "x"),
            Err(BtfError::NoStruct(_))
        ));
    }

    #[test]
    fn without_btf_every_feature_is_off_and_said() {
        let mut config = Config::default();
        let filled = fill_config(None, &mut config);
        assert_eq!(config.flags, 0);
        assert_eq!(filled.warnings.len(), 1);
    }
}
