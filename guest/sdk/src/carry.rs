//! How an open session carries its attribute values between calls: in a
//! section at the front of the session's `data`, which the host stores
//! verbatim. Values are kept by name and type, so another version of the
//! plugin (after a hot swap) finds those it also declares and drops the rest.
//!
//! Layout: `MAGIC`, a count, then per value its name (length-prefixed), a
//! type tag and the value; the plugin's own bytes follow. Data without the
//! magic (a 0.1 plugin's, or a plugin's that declares no attribute) is all
//! the plugin's own.

use crate::wit::AttributeValue;

const MAGIC: [u8; 3] = [0xa7, b'S', 1];

/// Splits `data` into the attribute values (in the order of `names`, by name
/// and type) and the plugin's own bytes.
pub(crate) fn split(
    data: Vec<u8>,
    names: &[(&'static str, crate::wit::AttributeType, &'static str)],
) -> (Vec<Option<AttributeValue>>, Vec<u8>) {
    let mut values = vec![None; names.len()];
    // A section is taken out even by rules that declare no attribute: it is
    // not their bytes.
    if !data.starts_with(&MAGIC) {
        return (values, data);
    }
    let mut reader = Reader { data: &data, at: MAGIC.len() };
    let Some(count) = reader.byte() else { return (values, data) };
    for _ in 0..count {
        let Some((name, value)) = reader.entry() else {
            // Damaged: keep the bytes as the plugin's rather than lose them.
            return (vec![None; names.len()], data);
        };
        let declared = names.iter().position(|(n, t, _)| *n == name && *t == kind(&value));
        if let Some(index) = declared {
            values[index] = Some(value);
        }
    }
    let own = data[reader.at..].to_vec();
    (values, own)
}

/// Joins attribute values and the plugin's own bytes into `data`.
pub(crate) fn join(
    values: &[Option<AttributeValue>],
    names: &[(&'static str, crate::wit::AttributeType, &'static str)],
    own: Vec<u8>,
) -> Vec<u8> {
    let set = values.iter().filter(|v| v.is_some()).count();
    if set == 0 && !own.starts_with(&MAGIC) {
        return own;
    }
    let mut data = Vec::with_capacity(16 + own.len());
    data.extend_from_slice(&MAGIC);
    data.push(set as u8);
    for (value, (name, _, _)) in values.iter().zip(names) {
        let Some(value) = value else { continue };
        data.push(name.len() as u8);
        data.extend_from_slice(name.as_bytes());
        match value {
            AttributeValue::String(s) => {
                data.push(0);
                put_str(&mut data, s);
            }
            AttributeValue::Long(n) => {
                data.push(1);
                data.extend_from_slice(&n.to_le_bytes());
            }
            AttributeValue::Double(x) => {
                data.push(2);
                data.extend_from_slice(&x.to_le_bytes());
            }
            AttributeValue::Boolean(b) => data.extend_from_slice(&[3, u8::from(*b)]),
            AttributeValue::StringList(list) => {
                data.push(4);
                data.extend_from_slice(&(list.len() as u32).to_le_bytes());
                for s in list {
                    put_str(&mut data, s);
                }
            }
        }
    }
    data.extend_from_slice(&own);
    data
}

fn put_str(data: &mut Vec<u8>, s: &str) {
    data.extend_from_slice(&(s.len() as u32).to_le_bytes());
    data.extend_from_slice(s.as_bytes());
}

fn kind(value: &AttributeValue) -> crate::wit::AttributeType {
    use crate::wit::AttributeType as T;
    match value {
        AttributeValue::String(_) => T::String,
        AttributeValue::Long(_) => T::Long,
        AttributeValue::Double(_) => T::Double,
        AttributeValue::Boolean(_) => T::Boolean,
        AttributeValue::StringList(_) => T::StringList,
    }
}

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let bytes = self.data.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(bytes)
    }
    fn byte(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn eight(&mut self) -> Option<[u8; 8]> {
        self.take(8)?.try_into().ok()
    }
    fn string(&mut self) -> Option<String> {
        let len = u32::from_le_bytes(self.take(4)?.try_into().ok()?) as usize;
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }
    fn entry(&mut self) -> Option<(&'a str, AttributeValue)> {
        let len = self.byte()? as usize;
        let name = std::str::from_utf8(self.take(len)?).ok()?;
        let value = match self.byte()? {
            0 => AttributeValue::String(self.string()?),
            1 => AttributeValue::Long(i64::from_le_bytes(self.eight()?)),
            2 => AttributeValue::Double(f64::from_le_bytes(self.eight()?)),
            3 => AttributeValue::Boolean(self.byte()? != 0),
            4 => {
                let count = u32::from_le_bytes(self.take(4)?.try_into().ok()?) as usize;
                // Each string takes at least its 4-byte length: bounds the allocation.
                let mut list = Vec::with_capacity(count.min(self.data.len() / 4));
                for _ in 0..count {
                    list.push(self.string()?);
                }
                AttributeValue::StringList(list)
            }
            _ => return None,
        };
        Some((name, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wit::AttributeType as T;

    const NAMES: &[(&str, T, &str)] =
        &[("converted", T::Boolean, ""), ("revenue", T::Double, ""), ("tags", T::StringList, "")];

    #[test]
    fn values_and_own_bytes_round_trip() {
        let values = vec![
            Some(AttributeValue::Boolean(true)),
            None,
            Some(AttributeValue::StringList(vec!["a".into(), "é".into()])),
        ];
        let data = join(&values, NAMES, vec![9, 8, 7]);
        assert_eq!(split(data, NAMES), (values, vec![9, 8, 7]));
    }

    #[test]
    fn another_version_keeps_what_it_also_declares_by_name_and_type() {
        let data = join(
            &[Some(AttributeValue::Boolean(true)), Some(AttributeValue::Double(2.5)), None],
            NAMES,
            vec![],
        );
        let other: &[(&str, T, &str)] = &[("revenue", T::Double, ""), ("converted", T::Long, "")];
        assert_eq!(split(data, other), (vec![Some(AttributeValue::Double(2.5)), None], vec![]));
    }

    #[test]
    fn data_without_a_section_is_all_the_plugins_and_damage_loses_nothing() {
        assert_eq!(split(vec![1, 2, 3], NAMES), (vec![None, None, None], vec![1, 2, 3]));
        assert_eq!(join(&[None, None, None], NAMES, vec![4]), vec![4]);
        // Own bytes that look like a section get an empty one in front.
        let lookalike = [&MAGIC[..], &[7]].concat();
        let joined = join(&[None, None, None], NAMES, lookalike.clone());
        assert_eq!(split(joined, NAMES), (vec![None, None, None], lookalike));
        // Rules that declare nothing take the section out all the same.
        let data = join(&[Some(AttributeValue::Long(5)), None, None], NAMES, vec![9]);
        assert_eq!(split(data, &[]), (vec![], vec![9]));
        let mut damaged = join(&[Some(AttributeValue::Long(5)), None, None], NAMES, vec![]);
        damaged.truncate(damaged.len() - 3);
        assert_eq!(split(damaged.clone(), NAMES), (vec![None, None, None], damaged));
    }
}
