//! Unit tests of the image build: digests, layer contents, the Containerfile's equivalence.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::fs;

use super::oci::*;
use super::*;
use crate::repo_root;

#[test]
fn rfc3339_of_known_instants() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(rfc3339(1_798_761_599), "2026-12-31T23:59:59Z");
}

#[test]
fn the_same_binary_packs_to_the_same_digest() {
    let meta = Meta {
        epoch: 1_700_000_000,
        revision: "abc".into(),
    };
    let pack_once = || {
        let mut layout = Layout::default();
        let d = pack(&mut layout, &IMAGES[0], Platform::Arm64, b"\x7fELF", &meta).unwrap();
        (d, layout.blobs)
    };
    let (a, blobs_a) = pack_once();
    let (b, blobs_b) = pack_once();
    assert_eq!(a, b);
    assert_eq!(blobs_a, blobs_b);
    let (c, _) = {
        let mut layout = Layout::default();
        let d = pack(&mut layout, &IMAGES[0], Platform::Amd64, b"\x7fELF", &meta).unwrap();
        (d, layout)
    };
    assert_ne!(a.digest(), c.digest(), "the platform is in the config");
}

#[test]
fn layer_holds_the_user_tmp_and_the_binary_with_fixed_metadata() {
    let tar = layer_tar(&IMAGES[1], b"bin", 42).unwrap();
    let mut archive = tar::Archive::new(tar.as_slice());
    let entries: Vec<(String, u32, u64, u64)> = archive
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let h = e.header();
            (
                e.path().unwrap().display().to_string(),
                h.mode().unwrap(),
                h.uid().unwrap(),
                h.mtime().unwrap(),
            )
        })
        .collect();
    let paths: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(
        paths,
        [
            "etc/",
            "etc/group",
            "etc/passwd",
            "tmp/",
            "usr/",
            "usr/local/",
            "usr/local/bin/",
            "usr/local/bin/xdpturn-operator"
        ]
    );
    assert!(entries.iter().all(|e| e.2 == 0 && e.3 == 42));
    assert_eq!(entries[3].1, 0o1777);
    assert_eq!(entries[7].1, 0o755);
}

/// The Containerfile builds what `layer_tar` and `pack` write: the same passwd and group
/// lines, user, binary paths, entrypoints and labels.
#[test]
fn containerfile_matches_the_images() {
    let file = fs::read_to_string(repo_root().join("Containerfile")).unwrap();
    let tar = layer_tar(&IMAGES[0], b"", 0).unwrap();
    let mut archive = tar::Archive::new(tar.as_slice());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().display().to_string();
        if path.starts_with("etc/") && !path.ends_with('/') {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut entry, &mut text).unwrap();
            for line in text.lines() {
                assert!(file.contains(&format!("'{line}'")), "{path}: {line}");
            }
        }
    }
    assert!(file.contains("chmod 1777 /rootfs/tmp"));
    assert!(file.contains(&format!("USER {NONROOT}:{NONROOT}")));
    assert!(file.contains(&format!("ARG VERSION={VERSION}")));
    let meta = Meta {
        epoch: 0,
        revision: String::new(),
    };
    for image in IMAGES {
        assert!(file.contains(&format!("FROM base AS {}", image.binary)));
        assert!(file.contains(&format!("ENTRYPOINT [\"/{BIN_DIR}/{}\"]", image.binary)));
        for (key, value) in labels(&image, &meta) {
            let value = value.replace(VERSION, "${VERSION}");
            assert!(
                file.contains(&format!("{key}=\"{value}\"")),
                "{key}={value}"
            );
        }
    }
}

#[test]
fn canonical_json_sorts_keys() {
    let map: HashMap<&str, u8> = (0..20u8)
        .map(|i| {
            (
                [
                    "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o", "p",
                    "q", "r", "s", "t",
                ][usize::from(i)],
                i,
            )
        })
        .collect();
    let json = String::from_utf8(canonical_json(&map).unwrap()).unwrap();
    assert!(json.starts_with("{\"a\":0,\"b\":1,"), "{json}");
}
