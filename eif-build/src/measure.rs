//! Measures an existing EIF with the official crate's `EifReader` after checking the file's
//! structure ourselves: the reader trusts section sizes (allocating whatever they claim) and
//! indexes into the signature section, so a hostile or truncated file must not reach it unchecked.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use aws_nitro_enclaves_image_format::defs::{
    EIF_MAGIC, EifHeader, EifSectionHeader, EifSectionType, MAX_NUM_SECTIONS,
};
use aws_nitro_enclaves_image_format::utils::eif_reader::EifReader;

use crate::error::EifError;
use crate::input::require_file;
use crate::measurements::Measurements;

/// CBOR encodings of an empty array (definite `0x80`, indefinite `0x9f 0xff`): an empty
/// signature list, on which the image-format crate would index out of bounds.
const CBOR_EMPTY_ARRAYS: [&[u8]; 2] = [&[0x80], &[0x9f, 0xff]];

/// Reads the EIF at `path`, checks its structure and CRC32, and returns its measurements.
pub fn measure(path: &Path) -> Result<Measurements, EifError> {
    require_file(path, "EIF")?;
    check_structure(path)?;
    let path_str = path.to_str().ok_or_else(|| EifError::MalformedEif {
        path: path.to_path_buf(),
        reason: "path is not UTF-8".to_owned(),
    })?;
    let mut reader = EifReader::from_eif(path_str.to_owned()).map_err(EifError::Image)?;
    if !reader.check_crc() {
        return Err(EifError::BadCrc {
            path: path.to_path_buf(),
            stored: reader.header.eif_crc32,
            computed: reader.eif_crc,
        });
    }
    let map = reader.get_measurements().map_err(EifError::Image)?;
    Measurements::from_crate_map(map)
}

/// Walks the header and every section header: magic, section count, offsets that agree with the
/// header, sizes inside the file, a non-empty signature list, and no trailing bytes.
fn check_structure(path: &Path) -> Result<(), EifError> {
    let malformed = |reason: String| EifError::MalformedEif {
        path: path.to_path_buf(),
        reason,
    };
    let mut file = File::open(path).map_err(|e| EifError::io("open", path, e))?;
    let len = file
        .metadata()
        .map_err(|e| EifError::io("inspect", path, e))?
        .len();

    let mut header_buf = vec![0_u8; EifHeader::size()];
    file.read_exact(&mut header_buf).map_err(|_| {
        malformed(format!(
            "shorter than the {}-byte EIF header",
            EifHeader::size()
        ))
    })?;
    if !header_buf.starts_with(&EIF_MAGIC) {
        return Err(malformed("no EIF magic (.eif)".to_owned()));
    }
    let header = EifHeader::from_be_bytes(&header_buf).map_err(malformed)?;
    let declared = usize::from(header.num_sections);
    if declared > MAX_NUM_SECTIONS {
        return Err(malformed(format!(
            "{declared} sections declared, at most {MAX_NUM_SECTIONS}"
        )));
    }

    let section_header_len = EifSectionHeader::size() as u64;
    let mut offset = EifHeader::size() as u64;
    let mut index = 0_usize;
    let mut section_buf = vec![0_u8; EifSectionHeader::size()];
    while offset < len {
        if len - offset < section_header_len {
            return Err(malformed(format!(
                "{} trailing bytes after the last section",
                len - offset
            )));
        }
        file.seek(SeekFrom::Start(offset))
            .and_then(|_| file.read_exact(&mut section_buf))
            .map_err(|e| EifError::io("read", path, e))?;
        let section = EifSectionHeader::from_be_bytes(&section_buf)
            .map_err(|e| malformed(format!("section {index}: {e}")))?;
        let data_start = offset + section_header_len;
        let data_end = data_start
            .checked_add(section.section_size)
            .filter(|end| *end <= len)
            .ok_or_else(|| malformed(format!("section {index} runs past the end of the file")))?;
        let header_agrees = header.section_offsets.get(index) == Some(&offset)
            && header.section_sizes.get(index) == Some(&section.section_size);
        if index >= declared || !header_agrees {
            return Err(malformed(format!(
                "section {index} disagrees with the EIF header"
            )));
        }
        match section.section_type {
            EifSectionType::EifSectionInvalid => {
                return Err(malformed(format!("section {index} has the invalid type")));
            }
            EifSectionType::EifSectionSignature => {
                let mut sig = vec![0_u8; usize::try_from(section.section_size).unwrap_or(0)];
                file.read_exact(&mut sig)
                    .map_err(|e| EifError::io("read", path, e))?;
                if CBOR_EMPTY_ARRAYS.contains(&sig.as_slice()) {
                    return Err(malformed("empty signature section".to_owned()));
                }
            }
            _ => {}
        }
        offset = data_end;
        index += 1;
    }
    if index != declared {
        return Err(malformed(format!(
            "header declares {declared} sections, file has {index}"
        )));
    }
    Ok(())
}
