//! Which Python runs the app: the embedded interpreter adopts the prefix of a `python`
//! executable, chosen here from the environment, and says where the choice came from (the
//! start-up line, `--version`). A `VIRTUAL_ENV` that is not a venv is an error rather than
//! silently another interpreter's site-packages.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The Python this binary was built against (its libpython is the one linked).
pub const BUILD_PYTHON: &str = env!("WSGO_BUILD_PYTHON");
/// Its version, `3.11`.
pub const BUILD_VERSION: &str = env!("WSGO_BUILD_PYTHON_VERSION");

/// Where the choice came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The `VIRTUAL_ENV` variable (an activated venv).
    VirtualEnv,
    /// The venv wsgo itself is installed in (`venv/bin/wsgo`).
    Installed,
    /// The venv whose `python3` comes first on `PATH`.
    Path,
    /// No venv: the Python wsgo was built against.
    Build,
}

/// The interpreter to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// The `python` executable whose prefix is adopted.
    pub program: PathBuf,
    /// The venv, if any.
    pub venv: Option<PathBuf>,
    /// Where the choice came from.
    pub source: Source,
}

impl std::fmt::Display for Choice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "python {BUILD_VERSION}, ")?;
        match (&self.venv, self.source) {
            (Some(v), Source::VirtualEnv) => write!(f, "venv {} (from VIRTUAL_ENV)", v.display()),
            (Some(v), Source::Installed) => write!(f, "venv {} (wsgo is installed in it)", v.display()),
            (Some(v), _) => write!(f, "venv {} (its python3 is first on PATH)", v.display()),
            (None, _) => write!(f, "no venv: {} (the build's Python)", self.program.display()),
        }
    }
}

/// `VIRTUAL_ENV` names something that is not a venv.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("VIRTUAL_ENV={path:?} is not a virtualenv ({why}); activate a venv or unset VIRTUAL_ENV")]
pub struct NotAVenv {
    /// The path given.
    pub path: PathBuf,
    /// What is missing.
    pub why: &'static str,
}

/// Chooses from this process's environment.
pub fn choose() -> Result<Choice, NotAVenv> {
    choose_from(
        std::env::var_os("VIRTUAL_ENV"),
        std::env::current_exe().ok(),
        std::env::var_os("PATH"),
        Path::new(BUILD_PYTHON),
    )
}

/// The choice: `VIRTUAL_ENV` if set (it must be a venv), else the venv holding `exe`, else a
/// venv whose `python3` is first on `path`, else `build`.
pub fn choose_from(
    virtual_env: Option<OsString>,
    exe: Option<PathBuf>,
    path: Option<OsString>,
    build: &Path,
) -> Result<Choice, NotAVenv> {
    let is_venv = |dir: &Path| dir.join("pyvenv.cfg").is_file();
    if let Some(venv) = virtual_env.filter(|v| !v.is_empty()) {
        let venv = PathBuf::from(venv);
        let why = if !venv.is_dir() {
            "no such folder"
        } else if !is_venv(&venv) {
            "no pyvenv.cfg in it"
        } else if !venv.join("bin/python").exists() {
            "no bin/python in it"
        } else {
            return Ok(Choice {
                program: venv.join("bin/python"),
                venv: Some(venv),
                source: Source::VirtualEnv,
            });
        };
        return Err(NotAVenv { path: venv, why });
    }
    if let Some(bin) = exe.as_deref().and_then(Path::parent)
        && let Some(venv) = bin.parent()
        && is_venv(venv)
        && bin.join("python").exists()
    {
        return Ok(Choice {
            program: bin.join("python"),
            venv: Some(venv.to_path_buf()),
            source: Source::Installed,
        });
    }
    if let Some(paths) = path {
        // Only the first python3 on PATH counts: the one a shell would run.
        if let Some(dir) = std::env::split_paths(&paths).find(|d| d.join("python3").exists())
            && let Some(venv) = dir.parent().filter(|v| is_venv(v))
        {
            return Ok(Choice {
                program: dir.join("python3"),
                venv: Some(venv.to_path_buf()),
                source: Source::Path,
            });
        }
    }
    Ok(Choice { program: build.to_path_buf(), venv: None, source: Source::Build })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_choice_and_its_errors() {
        let root = std::env::temp_dir().join(format!("wsgo-interp-{}", std::process::id()));
        let venv = root.join("venv");
        let plain = root.join("plain");
        let half = root.join("half");
        for d in [venv.join("bin"), plain.join("bin"), half.clone()] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(venv.join("pyvenv.cfg"), "home = /usr/bin\n").unwrap();
        std::fs::write(venv.join("bin/python"), "").unwrap();
        std::fs::write(venv.join("bin/python3"), "").unwrap();
        std::fs::write(plain.join("bin/python3"), "").unwrap();
        std::fs::write(half.join("pyvenv.cfg"), "").unwrap();
        let build = Path::new("/usr/bin/python3");
        let os = |p: &Path| Some(p.as_os_str().to_owned());

        let c = choose_from(os(&venv), None, None, build).unwrap();
        assert_eq!((c.source, c.venv.as_deref()), (Source::VirtualEnv, Some(venv.as_path())));
        assert!(c.to_string().contains("(from VIRTUAL_ENV)"), "{c}");
        for (bad, why) in [
            (root.join("typo"), "no such folder"),
            (plain.clone(), "no pyvenv.cfg in it"),
            (half.clone(), "no bin/python in it"),
        ] {
            let e = choose_from(os(&bad), None, None, build).unwrap_err();
            assert_eq!((e.path.as_path(), e.why), (bad.as_path(), why));
            assert!(e.to_string().contains(&*bad.to_string_lossy()), "{e}");
        }
        // Empty counts as unset.
        let c = choose_from(Some(OsString::new()), None, None, build).unwrap();
        assert_eq!(c.source, Source::Build);

        let c = choose_from(None, Some(venv.join("bin/wsgo")), None, build).unwrap();
        assert_eq!(c.source, Source::Installed);

        let path = std::env::join_paths([venv.join("bin"), plain.join("bin")]).unwrap();
        assert_eq!(choose_from(None, None, Some(path), build).unwrap().source, Source::Path);
        // A plain python3 first on PATH hides a venv after it.
        let path = std::env::join_paths([plain.join("bin"), venv.join("bin")]).unwrap();
        let c = choose_from(None, None, Some(path), build).unwrap();
        assert_eq!((c.source, c.program.as_path()), (Source::Build, build));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
