//! A writer for the "newc" cpio format Linux unpacks as its initramfs
//! (Documentation/driver-api/early-userspace/buffer-format.rst).
//!
//! The archive is built in memory from a list of entries, so device nodes
//! (`/dev/console`, without which init has no output) need no `mknod` and
//! no root. The output is deterministic (inode numbers in order, time 0,
//! owner root) and byte-for-byte what GNU cpio writes with `--reproducible
//! --owner=0:0`, so the initramfs, and with it the guest's measurements of
//! it, are the same on every machine.

/// One archive member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// A directory with permission bits `mode`.
    Directory { path: String, mode: u32 },
    /// A regular file.
    File { path: String, mode: u32, data: Vec<u8> },
    /// A symbolic link to `target`.
    Symlink { path: String, target: String },
    /// A character device node.
    CharDevice { path: String, mode: u32, major: u32, minor: u32 },
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

impl Entry {
    fn path(&self) -> &str {
        match self {
            Entry::Directory { path, .. }
            | Entry::File { path, .. }
            | Entry::Symlink { path, .. }
            | Entry::CharDevice { path, .. } => path,
        }
    }
}

/// Appends one header, name and data, each padded to 4 bytes.
fn push_member(
    out: &mut Vec<u8>,
    inode: u32,
    mode: u32,
    links: u32,
    rdev: (u32, u32),
    name: &str,
    data: &[u8],
) {
    let fields = [inode, mode, 0, 0, links, 0, data.len() as u32, 0, 0, rdev.0, rdev.1];
    out.extend_from_slice(b"070701");
    for field in fields {
        out.extend_from_slice(format!("{field:08X}").as_bytes());
    }
    out.extend_from_slice(format!("{:08X}{:08X}", name.len() + 1, 0).as_bytes());
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad(out);
    out.extend_from_slice(data);
    pad(out);
}

fn pad(out: &mut Vec<u8>) {
    out.resize(out.len().next_multiple_of(4), 0);
}

/// The archive of `entries` (in order), with the trailer, padded to
/// 512-byte blocks.
pub fn archive(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for (inode, entry) in entries.iter().enumerate() {
        let inode = inode as u32;
        let name = entry.path();
        match entry {
            Entry::Directory { mode, .. } => {
                // "." and ".." plus one ".." per subdirectory.
                let subdirectories = entries
                    .iter()
                    .filter(|e| matches!(e, Entry::Directory { .. }) && parent(e.path()) == name)
                    .count() as u32;
                push_member(&mut out, inode, S_IFDIR | mode, 2 + subdirectories, (0, 0), name, &[]);
            }
            Entry::File { mode, data, .. } => {
                push_member(&mut out, inode, S_IFREG | mode, 1, (0, 0), name, data);
            }
            Entry::Symlink { target, .. } => {
                push_member(&mut out, inode, S_IFLNK | 0o777, 1, (0, 0), name, target.as_bytes());
            }
            Entry::CharDevice { mode, major, minor, .. } => {
                push_member(&mut out, inode, S_IFCHR | mode, 1, (*major, *minor), name, &[]);
            }
        }
    }
    push_member(&mut out, 0, 0, 1, (0, 0), "TRAILER!!!", &[]);
    out.resize(out.len().next_multiple_of(512), 0);
    out
}

/// The parent directory of an archive path ("." for top-level names).
fn parent(path: &str) -> &str {
    match path.rsplit_once('/') {
        Some((parent, _)) => parent,
        None if path == "." => "",
        None => ".",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `printf '.\nbin\nbin/x\nbin/y\n' | cpio -o -H newc --reproducible
    /// --owner=0:0` (GNU cpio 2.13) over: `bin/x` = "hi\n" (0755), `bin/y`
    /// -> x, directories 0755, every time stamp 0.
    const GNU_CPIO: &[u8] = include_bytes!("../../../tests/linux/fixtures/gnu-cpio-2.13-newc.cpio");

    #[test]
    fn matches_gnu_cpio_byte_for_byte() {
        let entries = [
            Entry::Directory { path: ".".into(), mode: 0o755 },
            Entry::Directory { path: "bin".into(), mode: 0o755 },
            Entry::File { path: "bin/x".into(), mode: 0o755, data: b"hi\n".to_vec() },
            Entry::Symlink { path: "bin/y".into(), target: "x".into() },
        ];
        assert_eq!(archive(&entries), GNU_CPIO);
    }

    #[test]
    fn device_nodes_carry_their_numbers() {
        let archive = archive(&[Entry::CharDevice {
            path: "dev/console".into(),
            mode: 0o600,
            major: 5,
            minor: 1,
        }]);
        let header = std::str::from_utf8(&archive[..110]).unwrap();
        assert_eq!(&header[14..22], "00002180", "S_IFCHR | 0600");
        assert_eq!(&header[78..86], "00000005", "rdevmajor");
        assert_eq!(&header[86..94], "00000001", "rdevminor");
        assert_eq!(&archive[110..122], b"dev/console\0");
        assert_eq!(archive.len() % 512, 0);
    }
}
