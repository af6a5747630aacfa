//! What a picture's file says besides its pixels, and what of it is kept.
//!
//! Phones write EXIF into every photo: the camera, the time and, unless the owner turned
//! it off, where it was taken (GPS). A partner's product photo is public, so the stored
//! file keeps none of it, as Shopify and Saleor do: EXIF, XMP, IPTC and comments are
//! removed from JPEG, PNG and WebP files (the ICC colour profile stays, as it changes
//! how the pixels look). The one EXIF field that matters for display, the orientation
//! (a phone held upright stores a landscape image and says "rotate 90°"), is written
//! back alone, so browsers still show the photo upright; the thumbnail is rotated
//! itself. GIF files carry no EXIF and are kept as they are.
//!
//! The containers are parsed with `img-parts`; the orientation is read as the `image`
//! crate reads it.

use image::metadata::Orientation;
use image::ImageFormat;
use img_parts::jpeg::{markers, Jpeg};
use img_parts::png::Png;
use img_parts::webp::WebP;
use img_parts::{Bytes, ImageEXIF as _};

/// XMP in JPEG: an APP1 segment with this namespace.
const XMP_PREFIX: &[u8] = b"http://ns.adobe.com/xap/1.0/\0";
/// Text chunks of PNG (`tEXt`, `zTXt`, `iTXt`) and its modification time.
const PNG_TEXT: [[u8; 4]; 4] = [*b"tEXt", *b"zTXt", *b"iTXt", *b"tIME"];
/// XMP in WebP.
const WEBP_XMP: [u8; 4] = *b"XMP ";

/// A picture's bytes without metadata, and the orientation its EXIF gave.
pub struct Stripped {
    pub bytes: Vec<u8>,
    pub orientation: Orientation,
}

/// Removes the metadata of a JPEG, PNG or WebP file; others, and files the container
/// parser cannot read (the decoder judges those), are returned unchanged.
pub fn strip(format: ImageFormat, bytes: Vec<u8>) -> Stripped {
    let unchanged = |bytes| Stripped {
        bytes,
        orientation: Orientation::NoTransforms,
    };
    let shared = Bytes::from(bytes.clone());
    match format {
        ImageFormat::Jpeg => match Jpeg::from_bytes(shared) {
            Ok(mut jpeg) => {
                let orientation = orientation_of(jpeg.exif());
                jpeg.segments_mut().retain(|segment| {
                    let marker = segment.marker();
                    let xmp = marker == markers::APP1 && segment.contents().starts_with(XMP_PREFIX);
                    // APP13 holds Photoshop's IPTC block; COM is a free-text comment.
                    !(xmp || marker == markers::APP13 || marker == markers::COM)
                });
                jpeg.set_exif(orientation_exif(orientation));
                with_orientation(jpeg.encoder().bytes(), orientation)
            }
            Err(_) => unchanged(bytes),
        },
        ImageFormat::Png => match Png::from_bytes(shared) {
            Ok(mut png) => {
                let orientation = orientation_of(png.exif());
                for kind in PNG_TEXT {
                    png.remove_chunks_by_type(kind);
                }
                png.set_exif(orientation_exif(orientation));
                with_orientation(png.encoder().bytes(), orientation)
            }
            Err(_) => unchanged(bytes),
        },
        ImageFormat::WebP => match WebP::from_bytes(shared) {
            Ok(mut webp) => {
                let orientation = orientation_of(webp.exif());
                webp.remove_chunks_by_id(WEBP_XMP);
                webp.set_exif(orientation_exif(orientation));
                with_orientation(webp.encoder().bytes(), orientation)
            }
            Err(_) => unchanged(bytes),
        },
        _ => unchanged(bytes),
    }
}

fn with_orientation(bytes: Bytes, orientation: Orientation) -> Stripped {
    Stripped {
        bytes: bytes.to_vec(),
        orientation,
    }
}

fn orientation_of(exif: Option<Bytes>) -> Orientation {
    exif.and_then(|exif| Orientation::from_exif_chunk(&exif))
        .unwrap_or(Orientation::NoTransforms)
}

/// The smallest EXIF that says `orientation` (none for the default): a big-endian TIFF
/// header and one IFD with the one entry, tag 0x0112, a SHORT.
fn orientation_exif(orientation: Orientation) -> Option<Bytes> {
    if orientation == Orientation::NoTransforms {
        return None;
    }
    let mut exif = Vec::with_capacity(26);
    exif.extend_from_slice(b"MM\0\x2a");
    exif.extend_from_slice(&8u32.to_be_bytes()); // IFD0 right after the header
    exif.extend_from_slice(&1u16.to_be_bytes()); // one entry
    exif.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation
    exif.extend_from_slice(&3u16.to_be_bytes()); // SHORT
    exif.extend_from_slice(&1u32.to_be_bytes()); // one value
    exif.extend_from_slice(&u16::from(orientation.to_exif()).to_be_bytes());
    exif.extend_from_slice(&[0, 0]); // the value field's padding
    exif.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
    Some(Bytes::from(exif))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An EXIF block as a phone writes one: the orientation, the camera's make, and a
    /// GPS position, little-endian.
    pub(crate) fn phone_exif(orientation: u16) -> Vec<u8> {
        let mut e = Vec::new();
        e.extend_from_slice(b"II\x2a\0");
        e.extend_from_slice(&8u32.to_le_bytes());
        // IFD0 at 8: three entries (12 bytes each), then the next-IFD offset.
        let ifd0_end = 8 + 2 + 3 * 12 + 4; // 50
        let make_at = ifd0_end; // "SecretPhone\0", 12 bytes
        let gps_at = make_at + 12;
        e.extend_from_slice(&3u16.to_le_bytes());
        let entry = |e: &mut Vec<u8>, tag: u16, kind: u16, count: u32, value: u32| {
            e.extend_from_slice(&tag.to_le_bytes());
            e.extend_from_slice(&kind.to_le_bytes());
            e.extend_from_slice(&count.to_le_bytes());
            e.extend_from_slice(&value.to_le_bytes());
        };
        entry(&mut e, 0x010f, 2, 12, make_at as u32); // Make, ASCII
        entry(&mut e, 0x0112, 3, 1, u32::from(orientation)); // Orientation
        entry(&mut e, 0x8825, 4, 1, gps_at as u32); // the GPS IFD
        e.extend_from_slice(&0u32.to_le_bytes());
        e.extend_from_slice(b"SecretPhone\0");
        // GPS IFD: one entry, GPSLatitudeRef "S".
        e.extend_from_slice(&1u16.to_le_bytes());
        entry(&mut e, 0x0001, 2, 2, u32::from_le_bytes(*b"S\0\0\0"));
        e.extend_from_slice(&0u32.to_le_bytes());
        e
    }

    #[test]
    fn the_orientation_is_all_that_is_written_back() {
        let exif = orientation_exif(Orientation::Rotate90).unwrap();
        assert_eq!(exif.len(), 26);
        assert_eq!(
            Orientation::from_exif_chunk(&exif),
            Some(Orientation::Rotate90)
        );
        assert!(orientation_exif(Orientation::NoTransforms).is_none());
        let phone = phone_exif(6);
        assert_eq!(
            Orientation::from_exif_chunk(&phone),
            Some(Orientation::Rotate90)
        );
    }
}
