//! Page links for server-side paged lists.

/// The highest page number a list is asked for (far past any real list; keeps offsets small).
pub const MAX_PAGE: u64 = 1_000_000;

/// The page a query asks for (from 1, at most `MAX_PAGE`) and the offset of its first item.
pub fn page_and_offset(asked: Option<u64>, per: u64) -> (u64, u64) {
    let page = asked.unwrap_or(1).clamp(1, MAX_PAGE);
    (page, (page - 1).saturating_mul(per))
}

/// Where a paged list stands, with the links to the neighbouring pages.
pub struct Pager {
    pub page: u64,
    pub pages: u64,
    pub total: u64,
    pub first_item: u64,
    pub last_item: u64,
    pub prev: Option<String>,
    pub next: Option<String>,
}

impl Pager {
    /// Page `page` (from 1) of `total` items, `per` a page; `link` makes a page's URL.
    pub fn new(page: u64, per: u64, total: u64, link: impl Fn(u64) -> String) -> Pager {
        let pages = total.div_ceil(per).max(1);
        let first_item = page
            .saturating_sub(1)
            .saturating_mul(per)
            .saturating_add(1)
            .min(total);
        let last_item = page.saturating_mul(per).min(total);
        Pager {
            page,
            pages,
            total,
            first_item,
            last_item,
            prev: (page > 1).then(|| link((page - 1).min(pages))),
            next: (page < pages).then(|| link(page + 1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_link_to_their_neighbours() {
        let p = Pager::new(2, 50, 120, |n| format!("?page={n}"));
        assert_eq!((p.pages, p.first_item, p.last_item), (3, 51, 100));
        assert_eq!(p.prev.as_deref(), Some("?page=1"));
        assert_eq!(p.next.as_deref(), Some("?page=3"));
        let p = Pager::new(1, 50, 0, |n| format!("?page={n}"));
        assert_eq!((p.pages, p.first_item, p.last_item), (1, 0, 0));
        assert!(p.prev.is_none() && p.next.is_none());
        // Past the end: a way back, none forward.
        assert_eq!(page_and_offset(None, 50), (1, 0));
        assert_eq!(page_and_offset(Some(0), 50), (1, 0));
        assert_eq!(page_and_offset(Some(3), 50), (3, 100));
        assert_eq!(
            page_and_offset(Some(u64::MAX), 50),
            (MAX_PAGE, (MAX_PAGE - 1) * 50)
        );
        let p = Pager::new(9, 50, 120, |n| format!("?page={n}"));
        assert_eq!(p.prev.as_deref(), Some("?page=3"));
        assert!(p.next.is_none());
    }
}
