//! How the tests drive portwatch and their helper processes: one launcher of the
//! portwatch binary (`launch`), one reader of its stderr (`stderr`), the JSON
//! tracer built on them (`tracer`), the helper processes' typed reports
//! (`helpers`), and portwatch's programs in the kernel's list (`programs`).
pub mod helpers;
pub mod http;
pub mod launch;
pub mod programs;
pub mod stderr;
pub mod tracer;
