//! Aligned, optionally colored table rows: column widths and the colors in use.
pub const RESET: &str = "\x1b[0m";
pub const BOLD: &str = "\x1b[1m";
pub const RED: &str = "\x1b[31m";
pub const GREEN: &str = "\x1b[32m";
pub const YELLOW: &str = "\x1b[33m";
pub const BLUE: &str = "\x1b[34m";
pub const CYAN: &str = "\x1b[36m";
pub const MAGENTA: &str = "\x1b[35m";

pub const HEADER: [&str; 11] = [
    "TIME",
    "EVENT",
    "PROTO",
    "LOCAL ADDRESS",
    "FOREIGN ADDRESS",
    "STATE",
    "PID/PROGRAM",
    "ROLE",
    "LOCAL PORT",
    "FOREIGN PORT",
    "DETAIL",
];
/// Column widths; a longer value (an IPv6 address, say) widens its own row only.
pub const WIDTHS: [usize; 10] = [12, 14, 5, 23, 23, 11, 22, 8, 22, 22];

/// One aligned line, built cell by cell into a buffer. A cell's color (when colors
/// are on) does not count toward its width.
pub struct Row<'l> {
    pub line: &'l mut Vec<u8>,
    color: bool,
    column: usize,
    /// Where the current cell begins (its color code, if any), and its text.
    cell_start: usize,
    text_start: usize,
    colored: bool,
}

impl<'l> Row<'l> {
    pub fn new(line: &'l mut Vec<u8>, color: bool) -> Self {
        line.clear();
        Row {
            line,
            color,
            column: 0,
            cell_start: 0,
            text_start: 0,
            colored: false,
        }
    }

    pub fn start(&mut self, color: Option<&str>) {
        self.colored = false;
        self.cell_start = self.line.len();
        if let Some(c) = color.filter(|_| self.color) {
            self.line.extend_from_slice(c.as_bytes());
            self.colored = true;
        }
        self.text_start = self.line.len();
    }

    pub fn end(&mut self) {
        let text = &self.line[self.text_start..];
        // Characters, not bytes: a name may hold any UTF-8.
        let width = text.iter().filter(|b| (**b & 0xc0) != 0x80).count();
        if self.colored {
            if width == 0 {
                self.line.truncate(self.cell_start);
            } else {
                self.line.extend_from_slice(RESET.as_bytes());
            }
        }
        if let Some(w) = WIDTHS.get(self.column) {
            let pad = w.saturating_sub(width) + 1;
            self.line.resize(self.line.len() + pad, b' ');
        }
        self.column += 1;
    }

    /// A whole cell of text.
    pub fn cell(&mut self, text: &str, color: Option<&str>) {
        self.start(color);
        self.line.extend_from_slice(text.as_bytes());
        self.end();
    }

    pub fn finish(self) {
        while self.line.last() == Some(&b' ') {
            self.line.pop();
        }
        self.line.push(b'\n');
    }
}
