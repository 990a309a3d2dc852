//! Reading files that users name (images, keys, uploads): only regular
//! files, their size checked from metadata before a byte is read, and never
//! more than the limit plus one byte. `/dev/zero`, a FIFO or a 3 GiB file is
//! refused at once, not read or waited on.

use std::io::Read;
use std::path::Path;

/// The largest key or token file read (an RSA-4096 PEM is about 3.3 KB).
pub const MAX_SECRET_BYTES: u64 = 64 * 1024;

/// Read the whole of `path`, which must be a regular file of at most `max`
/// bytes. Errors name the file and say why; they never quote its content.
pub fn read(path: &Path, max: u64) -> Result<Vec<u8>, String> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read `{shown}`: {e}"))?;
    if !meta.is_file() {
        return Err(format!(
            "`{shown}` is not a regular file (a directory, device, FIFO or socket); refusing to read it"
        ));
    }
    if meta.len() > max {
        return Err(format!(
            "`{shown}` is {} bytes; at most {max} are allowed here",
            meta.len()
        ));
    }
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read `{shown}`: {e}"))?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read `{shown}`: {e}"))?;
    if bytes.len() as u64 > max {
        return Err(format!(
            "`{shown}` grew past {max} bytes while it was read; refusing it"
        ));
    }
    Ok(bytes)
}

/// [`read`] as UTF-8 text.
pub fn read_text(path: &Path, max: u64) -> Result<String, String> {
    String::from_utf8(read(path, max)?)
        .map_err(|_| format!("`{}` is not UTF-8 text", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_small_regular_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a");
        std::fs::write(&f, b"hello").unwrap();
        assert_eq!(read(&f, 5).unwrap(), b"hello");
        assert!(read(&f, 4).unwrap_err().contains("is 5 bytes; at most 4"));
        assert!(
            read(dir.path(), 10)
                .unwrap_err()
                .contains("not a regular file")
        );
        assert!(
            read(Path::new("/dev/zero"), 10)
                .unwrap_err()
                .contains("not a regular file")
        );
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(read(&fifo, 10).unwrap_err().contains("not a regular file"));
    }
}
