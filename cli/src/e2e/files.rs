//! Private files in the data directory: created owner-only (0700 directories, 0600 files on
//! unix) and replaced atomically, so a crash leaves either the old file or the new one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use rand::Rng;

use super::error::{E2eError, Result};

/// Creates `dir` (and its parents) if missing; a newly created directory is owner-only.
pub(crate) fn ensure_dir(dir: &Path) -> Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(E2eError::io(dir))
}

/// Creates the client's data root owner-only (0700) whatever the umask, and makes one that an
/// older version created readable by others owner-only too: it holds key files, pins, seen
/// ids and received images.
pub fn private_root(dir: &Path) -> Result<()> {
    ensure_dir(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(E2eError::io(dir))?;
    }
    Ok(())
}

/// Options that create a new owner-only (0600) file.
pub(crate) fn private_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}

/// Writes `bytes` to `path` atomically: a 0600 temporary file in the same directory is
/// written and synced, then renamed over `path`, then the directory is synced.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    ensure_dir(dir)?;
    let tmp = temp_path(path);
    let result = (|| {
        let mut file = private_options()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(E2eError::io(&tmp))?;
        file.write_all(bytes).map_err(E2eError::io(&tmp))?;
        file.sync_all().map_err(E2eError::io(&tmp))?;
        fs::rename(&tmp, path).map_err(E2eError::io(path))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    sync_dir(dir)
}

/// `path` with a random `.tmp-…` suffix.
fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{:016x}", rand::rng().next_u64()));
    path.with_file_name(name)
}

/// Makes a rename in `dir` durable (no-op where directories cannot be opened).
fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(E2eError::io(dir))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Reads `path` if it exists and is at most `max` bytes: `Ok(None)` when it does not exist,
/// `Err(too_large(path))` when it is larger.
pub(crate) fn read_limited(
    path: &Path,
    max: u64,
    too_large: impl FnOnce(PathBuf) -> E2eError,
) -> Result<Option<Vec<u8>>> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(E2eError::io(path)(err)),
    };
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(E2eError::io(path))?;
    if bytes.len() as u64 > max {
        return Err(too_large(path.to_path_buf()));
    }
    Ok(Some(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/state");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["state"]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&path), 0o600);
            assert_eq!(mode(path.parent().unwrap()), 0o700);
        }
    }

    #[test]
    fn read_limited_cases() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let corrupt = |path| E2eError::CorruptStateFile { path };
        assert!(read_limited(&path, 4, corrupt).unwrap().is_none());
        fs::write(&path, b"1234").unwrap();
        assert_eq!(read_limited(&path, 4, corrupt).unwrap().unwrap(), b"1234");
        fs::write(&path, b"12345").unwrap();
        assert!(matches!(
            read_limited(&path, 4, corrupt),
            Err(E2eError::CorruptStateFile { .. })
        ));
    }
}
