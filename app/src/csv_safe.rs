//! Cells that are safe to open in a spreadsheet.
//!
//! A spreadsheet that opens a CSV file evaluates a cell that starts with `=`, `+`, `-` or `@`
//! (and, in some, a tab or carriage return) as a formula: `=HYPERLINK(...)` in a device's tag
//! would run on the machine of whoever opens the export ("CSV injection", OWASP). Convoy's CSV
//! writers pass every cell through [`neutralise`], which puts a `'` in front of such a cell
//! (the mark spreadsheets themselves use for "this is text"); a plain number such as `-33.86`
//! is left alone because a spreadsheet reads it as a number, never a formula.
//!
//! To keep export then import the identity, a cell that already starts with `'` is marked too,
//! and [`restore`] (used by the fleet importer) removes exactly one leading `'`. The rule for
//! anyone writing a CSV inventory by hand: a leading `'` is read as this mark and dropped.
//!
//! This module does not quote or escape for CSV itself; the `csv` crate does that.

use std::borrow::Cow;

/// The mark put in front of a cell a spreadsheet would otherwise evaluate.
pub const MARK: char = '\'';

/// `cell`, with [`MARK`] in front when a spreadsheet would evaluate it or when it starts with
/// the mark itself.
pub fn neutralise(cell: &str) -> Cow<'_, str> {
    let Some(first) = cell.chars().next() else {
        return Cow::Borrowed(cell);
    };
    let risky = matches!(first, '=' | '+' | '-' | '@' | '\t' | '\r' | '\n' | MARK);
    if risky && !is_plain_number(cell) {
        Cow::Owned(format!("{MARK}{cell}"))
    } else {
        Cow::Borrowed(cell)
    }
}

/// Undoes [`neutralise`]: `cell` without one leading [`MARK`].
pub fn restore(cell: &str) -> &str {
    cell.strip_prefix(MARK).unwrap_or(cell)
}

/// Whether `cell` is a decimal number with an optional leading `-` (`-33.8688`, `-7`), which a
/// spreadsheet reads as a number. Anything else that starts with `-` (`-2+3`, `-inf`) is not.
fn is_plain_number(cell: &str) -> bool {
    let digits = cell.strip_prefix('-').unwrap_or(cell);
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    !int.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit())
        && !(digits.contains('.') && frac.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(cell: &str, written: &str) {
        assert_eq!(neutralise(cell), written, "writing {cell:?}");
        assert_eq!(restore(&neutralise(cell)), cell, "reading back {cell:?}");
    }

    #[test]
    fn formulas_are_marked_and_come_back_unchanged() {
        check(
            "=HYPERLINK(\"http://x\",\"y\")",
            "'=HYPERLINK(\"http://x\",\"y\")",
        );
        check("+1+1", "'+1+1");
        check("@SUM(A1)", "'@SUM(A1)");
        check("-2+3+cmd|' /C calc'!A0", "'-2+3+cmd|' /C calc'!A0");
        check("\tx", "'\tx");
        check("\rx", "'\rx");
        check("-inf", "'-inf");
        check("'quoted", "''quoted");
        check("''", "'''");
    }

    #[test]
    fn ordinary_cells_and_numbers_are_left_alone() {
        check("", "");
        check("T300", "T300");
        check("eu-central", "eu-central");
        check("-33.8688", "-33.8688");
        check("-7", "-7");
        check("151.2093", "151.2093");
        check("a=b", "a=b");
        check("-", "'-");
        check("-1.", "'-1.");
        check("-.5", "'-.5");
    }
}
