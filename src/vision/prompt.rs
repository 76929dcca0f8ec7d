//! Prompts for promptable segmentation (Segment Anything): points, each
//! inside (positive) or outside (negative) the object, and an optional box,
//! in original image pixels. A request carries up to [`MAX_PROMPTS`] of them
//! and gets one mask per prompt.
//!
//! The types are `Copy` with fixed capacity, so [`super::InferParams`]
//! stays `Copy`; they enter the result cache's key ([`Prompts::key_bytes`]).
//! The CLI's `--point X,Y[,LABEL]` and `--box X0,Y0,X1,Y1` are parsed here.

use crate::error::{Error, Result};
use crate::v2::prompt_tensors::PromptSet;

/// Most prompts (masks) one request may ask for.
pub const MAX_PROMPTS: usize = 8;
/// Most points one prompt may hold.
pub const MAX_POINTS: usize = 16;

/// One clicked point.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PromptPoint {
    pub x: f32,
    pub y: f32,
    /// In the object (SAM label 1), or outside it (label 0).
    pub positive: bool,
}

/// Points and an optional box `[x0, y0, x1, y1]` describing one object.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prompt {
    points: [PromptPoint; MAX_POINTS],
    n_points: u8,
    bbox: Option<[f32; 4]>,
}

impl Prompt {
    /// A prompt from points and a box; at least one of them, every value
    /// finite, at most [`MAX_POINTS`] points, a box with `x0 < x1`, `y0 < y1`.
    pub fn new(points: &[PromptPoint], bbox: Option<[f32; 4]>) -> Result<Prompt> {
        if points.is_empty() && bbox.is_none() {
            return Err(Error::msg("a prompt needs at least one point or a box"));
        }
        if points.len() > MAX_POINTS {
            return Err(Error::msg(format!(
                "a prompt has {} points, at most {MAX_POINTS} are allowed",
                points.len()
            )));
        }
        if let Some(p) = points.iter().find(|p| !p.x.is_finite() || !p.y.is_finite()) {
            return Err(Error::msg(format!("point ({}, {}) is not finite", p.x, p.y)));
        }
        if let Some(b) = bbox {
            if b.iter().any(|v| !v.is_finite()) || b[0] >= b[2] || b[1] >= b[3] {
                return Err(Error::msg(format!(
                    "box {b:?}: expected finite x0,y0,x1,y1 with x0 < x1 and y0 < y1"
                )));
            }
        }
        let mut all = [PromptPoint::default(); MAX_POINTS];
        all[..points.len()].copy_from_slice(points);
        Ok(Prompt {
            points: all,
            n_points: points.len() as u8,
            bbox,
        })
    }

    pub fn points(&self) -> &[PromptPoint] {
        &self.points[..self.n_points as usize]
    }

    pub fn bbox(&self) -> Option<[f32; 4]> {
        self.bbox
    }

    /// Whether SAM should answer three candidate masks and keep the best:
    /// one point and no box is ambiguous (SAM's own advice).
    pub fn ambiguous(&self) -> bool {
        self.n_points == 1 && self.bbox.is_none()
    }

    fn key_bytes(&self, out: &mut Vec<u8>) {
        out.push(self.n_points);
        for p in self.points() {
            out.extend(p.x.to_bits().to_le_bytes());
            out.extend(p.y.to_bits().to_le_bytes());
            out.push(p.positive as u8);
        }
        match self.bbox {
            Some(b) => {
                out.push(1);
                b.iter().for_each(|v| out.extend(v.to_bits().to_le_bytes()));
            }
            None => out.push(0),
        }
    }
}

/// The prompts of one request, one mask each.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prompts {
    items: [Prompt; MAX_PROMPTS],
    n: u8,
}

impl Prompts {
    /// One to [`MAX_PROMPTS`] prompts.
    pub fn new(items: &[Prompt]) -> Result<Prompts> {
        let Some(first) = items.first() else {
            return Err(Error::msg("no prompt given"));
        };
        if items.len() > MAX_PROMPTS {
            return Err(Error::msg(format!(
                "{} prompts given, at most {MAX_PROMPTS} are allowed",
                items.len()
            )));
        }
        let mut all = [*first; MAX_PROMPTS];
        all[..items.len()].copy_from_slice(items);
        Ok(Prompts {
            items: all,
            n: items.len() as u8,
        })
    }

    /// The CLI's spelling: every `--point` and the `--box` make one prompt.
    pub fn from_args(points: &[String], bbox: Option<&str>) -> Result<Option<Prompts>> {
        if points.is_empty() && bbox.is_none() {
            return Ok(None);
        }
        let points = points.iter().map(|p| parse_point(p)).collect::<Result<Vec<_>>>()?;
        let bbox = bbox.map(parse_box).transpose()?;
        Ok(Some(Prompts::new(&[Prompt::new(&points, bbox)?])?))
    }

    /// Prompts as a v2 request sent them; `None` for none.
    pub fn from_sets(sets: &[PromptSet]) -> Result<Option<Prompts>> {
        if sets.is_empty() {
            return Ok(None);
        }
        let items = sets
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let points: Vec<PromptPoint> = s
                    .points
                    .iter()
                    .map(|&(x, y, l)| PromptPoint { x, y, positive: l == 1 })
                    .collect();
                Prompt::new(&points, s.bbox).map_err(|e| Error::msg(format!("prompt {i}: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        Prompts::new(&items).map(Some)
    }

    /// The v2 form of these prompts.
    pub fn to_sets(&self) -> Vec<PromptSet> {
        self.as_slice()
            .iter()
            .map(|p| PromptSet {
                points: p.points().iter().map(|q| (q.x, q.y, q.positive as i32)).collect(),
                bbox: p.bbox(),
            })
            .collect()
    }

    pub fn as_slice(&self) -> &[Prompt] {
        &self.items[..self.n as usize]
    }

    /// Stable bytes for cache keys.
    pub fn key_bytes(&self) -> Vec<u8> {
        let mut out = vec![self.n];
        self.as_slice().iter().for_each(|p| p.key_bytes(&mut out));
        out
    }
}

fn numbers(s: &str, what: &str) -> Result<Vec<f32>> {
    s.split(',')
        .map(|t| {
            t.trim()
                .parse::<f32>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| Error::usage(format!("{what} '{s}': '{}' is not a number", t.trim())))
        })
        .collect()
}

/// `X,Y` (a positive point) or `X,Y,LABEL` (1 positive, 0 negative), in
/// image pixels.
pub fn parse_point(s: &str) -> Result<PromptPoint> {
    let v = numbers(s, "point")?;
    let positive = match v.get(2).copied() {
        None => true,
        Some(1.0) => true,
        Some(0.0) => false,
        Some(l) => return Err(Error::usage(format!("point '{s}': label {l} is not 0 or 1"))),
    };
    if v.len() != 2 && v.len() != 3 {
        return Err(Error::usage(format!("point '{s}': expected X,Y or X,Y,LABEL")));
    }
    Ok(PromptPoint {
        x: v[0],
        y: v[1],
        positive,
    })
}

/// `X0,Y0,X1,Y1` in image pixels, `X0 < X1` and `Y0 < Y1`.
pub fn parse_box(s: &str) -> Result<[f32; 4]> {
    let v = numbers(s, "box")?;
    match v[..] {
        [x0, y0, x1, y1] if x0 < x1 && y0 < y1 => Ok([x0, y0, x1, y1]),
        [_, _, _, _] => Err(Error::usage(format!("box '{s}': expected X0 < X1 and Y0 < Y1"))),
        _ => Err(Error::usage(format!("box '{s}': expected X0,Y0,X1,Y1"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_and_boxes_parse_and_bad_ones_name_the_problem() {
        let p = parse_point("10,20").unwrap();
        assert_eq!((p.x, p.y, p.positive), (10.0, 20.0, true));
        assert!(!parse_point("1.5, 2, 0").unwrap().positive);
        for (bad, needle) in [
            ("1", "expected X,Y"),
            ("1,2,3,4", "label 3"),
            ("a,2", "'a' is not a number"),
            ("1,nan", "'nan' is not a number"),
            ("1,2,0.5", "label 0.5"),
        ] {
            let e = parse_point(bad).unwrap_err().to_string();
            assert!(e.contains(needle), "{bad}: {e}");
        }
        assert_eq!(parse_box("1,2,3,4").unwrap(), [1.0, 2.0, 3.0, 4.0]);
        assert!(parse_box("3,2,1,4").unwrap_err().to_string().contains("X0 < X1"));
        assert!(parse_box("1,2,3").unwrap_err().to_string().contains("X0,Y0,X1,Y1"));
    }

    #[test]
    fn prompts_are_bounded_and_keyed_by_content() {
        let pt = |x| PromptPoint {
            x,
            y: 1.0,
            positive: true,
        };
        assert!(Prompt::new(&[], None).is_err());
        assert!(Prompt::new(&[pt(0.0); MAX_POINTS + 1], None).is_err());
        assert!(Prompt::new(&[], Some([0.0, 0.0, 0.0, 1.0])).is_err());
        let a = Prompt::new(&[pt(1.0)], None).unwrap();
        let b = Prompt::new(&[pt(2.0)], None).unwrap();
        assert!(a.ambiguous());
        assert!(!Prompt::new(&[pt(1.0)], Some([0.0, 0.0, 1.0, 1.0])).unwrap().ambiguous());
        assert!(Prompts::new(&[a; MAX_PROMPTS + 1]).is_err());
        let ka = Prompts::new(&[a]).unwrap().key_bytes();
        assert_ne!(ka, Prompts::new(&[b]).unwrap().key_bytes());
        assert_ne!(ka, Prompts::new(&[a, a]).unwrap().key_bytes());
        assert_eq!(Prompts::new(&[a, b]).unwrap().as_slice(), &[a, b]);
        let args = Prompts::from_args(&["5,6".into(), "7,8,0".into()], Some("0,0,9,9")).unwrap();
        let p = args.unwrap().as_slice()[0];
        assert_eq!(p.points().len(), 2);
        assert_eq!(p.bbox(), Some([0.0, 0.0, 9.0, 9.0]));
        assert!(Prompts::from_args(&[], None).unwrap().is_none());
        let two = Prompts::new(&[a, Prompt::new(&[], Some([0.0, 0.0, 4.0, 4.0])).unwrap()]).unwrap();
        assert_eq!(Prompts::from_sets(&two.to_sets()).unwrap(), Some(two));
        let e = Prompts::from_sets(&[PromptSet::default()]).unwrap_err().to_string();
        assert!(e.contains("prompt 0: a prompt needs at least one point"), "{e}");
    }
}
