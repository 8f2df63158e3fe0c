//! How the CLI prints: aligned human tables by default, JSON with
//! `--output json` for scripts.

use serde::Serialize;

/// The output format chosen on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum Format {
    #[default]
    Human,
    Json,
}

/// Prints `value` as JSON, or the table made by `table` for humans.
pub fn print<T: Serialize>(format: Format, value: &T, table: impl FnOnce() -> Table) {
    match format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(value)
                .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
        ),
        Format::Human => print!("{}", table().render()),
    }
}

/// Prints `value` as JSON, or `line` for a human.
pub fn print_line<T: Serialize>(format: Format, value: &T, line: impl FnOnce() -> String) {
    match format {
        Format::Json => print(format, value, || Table::new(&[])),
        Format::Human => println!("{}", line()),
    }
}

/// A table with a header row.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if i < widths.len() {
                    widths[i] = widths[i].max(cell.chars().count());
                }
            }
        }
        let line = |cells: &[String]| {
            let mut out = String::new();
            for (i, cell) in cells.iter().enumerate() {
                if i + 1 == cells.len() {
                    out.push_str(cell);
                } else {
                    out.push_str(&format!("{cell:<width$}  ", width = widths[i]));
                }
            }
            out.trim_end().to_string() + "\n"
        };
        let mut out = line(&self.header);
        for row in &self.rows {
            out.push_str(&line(row));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_columns() {
        let mut table = Table::new(&["NAME", "STATE"]);
        table.row(vec!["a-long-name".into(), "ready".into()]);
        table.row(vec!["b".into(), "down".into()]);
        assert_eq!(
            table.render(),
            "NAME         STATE\na-long-name  ready\nb            down\n"
        );
    }
}
