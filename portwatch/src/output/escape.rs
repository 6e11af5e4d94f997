//! Text chosen by whoever runs a process (its name, later its command line) never
//! reaches a terminal raw: control characters are shown as visible escapes.
use std::borrow::Cow;

/// `\xNN` for C0 controls and DEL, `\u{NN}` for C1 controls, `\\` for a backslash
/// (so an escape in the output cannot be forged); everything else as it is.
pub fn escape_control(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| c.is_control() || c == '\\') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x80 && c.is_control() => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_are_untouched() {
        assert!(matches!(escape_control("nginx: worker"), Cow::Borrowed(_)));
    }

    #[test]
    fn controls_are_escaped_visibly() {
        assert_eq!(escape_control("a\x1b[31mb"), "a\\x1b[31mb");
        assert_eq!(escape_control("x\ny\r\t\x7f"), "x\\x0ay\\x0d\\x09\\x7f");
        assert_eq!(escape_control("c1\u{9b}"), "c1\\u{9b}");
        assert_eq!(escape_control("back\\slash"), "back\\\\slash");
    }
}
