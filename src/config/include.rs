//! `include = ["../_shared/juniper.toml", ...]` at the top of a config file: shared pieces of a
//! platform catalogue (a vendor's bootstrap, its defaults) written once. Each included file is
//! read first, in order, then the including file on top: tables merge key by key, any other
//! value (a string, a number, an array such as `[[disk]]` or `steps`) is replaced whole by the
//! later file. Included files may include others (at most [`MAX_DEPTH`] deep; a cycle is an
//! error). Include paths resolve against the including file's folder; every other relative
//! path (disks, kernel) against the main config file's folder, as if written there. Reads only
//! the files named; never touches anything else.

use super::ConfigError;
use std::path::{Path, PathBuf};
use toml::{Table, Value};

/// How deep includes may nest.
pub const MAX_DEPTH: usize = 4;

/// The config text of `path` with its includes merged in, as one TOML text.
pub(super) fn expand(text: &str, path: &Path) -> Result<String, ConfigError> {
    let table = table(text, path)?;
    if !table.contains_key("include") {
        return Ok(text.to_string());
    }
    let merged = with_includes(table, path, &mut vec![path.to_path_buf()])?;
    Ok(toml::to_string(&merged).expect("a TOML table serializes"))
}

fn table(text: &str, path: &Path) -> Result<Table, ConfigError> {
    text.parse::<Table>().map_err(|e| ConfigError::Syntax {
        path: path.to_path_buf(),
        message: e.to_string().trim().replace('\n', " "),
    })
}

fn with_includes(
    mut t: Table,
    path: &Path,
    chain: &mut Vec<PathBuf>,
) -> Result<Table, ConfigError> {
    let Some(inc) = t.remove("include") else {
        return Ok(t);
    };
    let bad = |why: &str| ConfigError::Syntax {
        path: path.to_path_buf(),
        message: format!("include: {why}"),
    };
    let names: Vec<String> = match inc {
        Value::String(s) => vec![s],
        Value::Array(a) => a
            .into_iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| bad("expected a list of file names"))?,
        _ => return Err(bad("expected a file name or a list of them")),
    };
    if chain.len() > MAX_DEPTH {
        return Err(bad(&format!("nested more than {MAX_DEPTH} deep")));
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut base = Table::new();
    for n in names {
        let p = dir.join(&n);
        if chain.contains(&p) {
            return Err(bad(&format!("{n:?} includes itself (a cycle)")));
        }
        let text = std::fs::read_to_string(&p).map_err(|source| ConfigError::Read {
            path: p.clone(),
            source,
        })?;
        chain.push(p.clone());
        let inner = with_includes(table(&text, &p)?, &p, chain)?;
        chain.pop();
        merge(&mut base, inner);
    }
    merge(&mut base, t);
    Ok(base)
}

/// `over` on top of `base`: tables merge key by key, anything else is replaced.
pub(super) fn merge(base: &mut Table, over: Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(Value::Table(b)), Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("lt-platforms-include-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("shared")).unwrap();
        std::fs::create_dir_all(d.join("kind")).unwrap();
        d
    }

    #[test]
    fn included_tables_merge_and_the_including_file_wins() {
        let d = dir("merge");
        std::fs::write(
            d.join("shared/vendor.toml"),
            "[vm]\nmemory = 2048\nsmp = 2\n[bootstrap]\nusername = \"admin\"\nsteps = [{ expect = \"login:\" }]\n",
        )
        .unwrap();
        let main = d.join("kind/launcher.toml");
        let text = "include = [\"../shared/vendor.toml\"]\n[vm]\nmemory = 4096\n";
        let out: Table = expand(text, &main).unwrap().parse().unwrap();
        let vm = out["vm"].as_table().unwrap();
        assert_eq!(vm["memory"].as_integer(), Some(4096));
        assert_eq!(vm["smp"].as_integer(), Some(2));
        assert_eq!(out["bootstrap"]["steps"].as_array().unwrap().len(), 1);
        assert!(!out.contains_key("include"));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_missing_file_a_cycle_and_a_bad_value_are_errors_naming_the_file() {
        let d = dir("errors");
        let main = d.join("kind/launcher.toml");
        let e = expand("include = [\"../shared/none.toml\"]\n", &main).unwrap_err();
        assert!(e.to_string().contains("none.toml"), "{e}");
        std::fs::write(d.join("shared/a.toml"), "include = \"a.toml\"\n").unwrap();
        let e = expand("include = \"../shared/a.toml\"\n", &main).unwrap_err();
        assert!(e.to_string().contains("cycle"), "{e}");
        let e = expand("include = 3\n", &main).unwrap_err();
        assert!(e.to_string().contains("include"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }
}
