//! Kernel struct member offsets, read from the running kernel's BTF at load time.
use std::collections::HashMap;

use btf_rs::{Btf, Type};

use portwatch_common::{config_flags, Config};

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

/// Fill in the struct offsets of `config` and its feature flags. Each feature is
/// switched on only when every offset it needs was found.
pub fn fill_config(btf: Option<&Btf>, config: &mut Config) -> BtfOffsets {
    let mut warnings = Vec::new();
    let Some(btf) = btf else {
        warnings.push(
            "no kernel BTF: accepted connections are attributed to the listener's owner (pid_exact: false) and connect failures carry no reason".into(),
        );
        return BtfOffsets { warnings };
    };
    let mut structs = Structs::new(btf);
    let s = &mut structs;
    let fields = (|| -> Result<(), BtfError> {
        let mut sock_common = |m: &str| s.offset_of("sock", &format!("__sk_common.{m}"));
        config.skc_daddr = sock_common("skc_daddr")?;
        config.skc_rcv_saddr = sock_common("skc_rcv_saddr")?;
        config.skc_dport = sock_common("skc_dport")?;
        config.skc_num = sock_common("skc_num")?;
        config.skc_family = sock_common("skc_family")?;
        config.skc_state = sock_common("skc_state")?;
        config.skc_v6_daddr = sock_common("skc_v6_daddr")?;
        config.skc_v6_rcv_saddr = sock_common("skc_v6_rcv_saddr")?;
        Ok(())
    })();
    match fields {
        Ok(()) => config.flags |= config_flags::SOCK_FIELDS,
        Err(e) => warnings.push(format!(
            "{e}: accepted connections are attributed to the listener's owner (pid_exact: false)"
        )),
    }
    let walk = (|| -> Result<(), BtfError> {
        config.task_files = s.offset_of("task_struct", "files")?;
        config.files_fdt = s.offset_of("files_struct", "fdt")?;
        config.fdt_max_fds = s.offset_of("fdtable", "max_fds")?;
        config.fdt_fd = s.offset_of("fdtable", "fd")?;
        config.file_private_data = s.offset_of("file", "private_data")?;
        config.socket_sk = s.offset_of("socket", "sk")?;
        Ok(())
    })();
    match walk {
        Ok(()) => config.flags |= config_flags::FD_WALK,
        Err(e) => warnings.push(format!(
            "{e}: in tracepoint mode, accepted connections are attributed to the listener's owner (pid_exact: false)"
        )),
    }
    let task = (|| -> Result<(), BtfError> {
        config.task_real_parent = s.offset_of("task_struct", "real_parent")?;
        config.task_tgid = s.offset_of("task_struct", "tgid")?;
        config.task_start_boottime = s.offset_of("task_struct", "start_boottime")?;
        Ok(())
    })();
    match task {
        Ok(()) => config.flags |= config_flags::TASK_FIELDS,
        Err(e) => warnings.push(format!(
            "{e}: events carry no parent pid, and process details cannot be checked against pid reuse"
        )),
    }
    match s.offset_of("sock", "sk_err") {
        Ok(off) => {
            config.sk_err = off;
            config.flags |= config_flags::SK_ERR;
        }
        Err(e) => warnings.push(format!("{e}: connect failures carry no reason")),
    }
    // A bitfield before Linux 5.6; then accept() relies on the family check alone.
    if let Ok(off) = s.offset_of("sock", "sk_protocol") {
        config.sk_protocol = off;
        config.flags |= config_flags::SK_PROTOCOL;
    }
    BtfOffsets { warnings }
}
