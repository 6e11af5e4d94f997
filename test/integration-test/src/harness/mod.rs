//! How the tests drive portwatch and their helper processes: one launcher of the
//! portwatch binary (`launch`), one reader of its stderr (`stderr`), the JSON
//! tracer built on them (`tracer`), the helper processes' typed reports
//! (`helpers`), portwatch's programs in the kernel's list (`programs`), plain
//! HTTP (`http`) and scratch directories (`scratch`).
pub mod helpers;
pub mod http;
pub mod launch;
pub mod programs;
pub mod scratch;
pub mod stderr;
pub mod tracer;
pub mod udp_helpers;
