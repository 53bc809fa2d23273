"""An access log whose COUNTER numbers are worked out by hand below, line by line.

Items: A (DSpace 123456789/1), B (DSpace 123456789/2), C (EPrints 77). Users: U1 and U2 share
one IP with two browsers (two sessions of one IP), U3 another IP, BOT a crawler. Months are UTC
months; sessions are user + UTC date + UTC hour.
"""

from __future__ import annotations

U1 = ("10.0.0.1", "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0")
U2 = ("10.0.0.1", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36")
U3 = ("10.0.0.3", "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_2) AppleWebKit/605.1.15 Version/17.2 Safari/605.1.15")
BOT = ("10.0.0.9", "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)")
A_PDF, A_PAGE = "/bitstream/handle/123456789/1/article.pdf?sequence=1", "/handle/123456789/1"
B_PDF, B_PAGE = "/bitstream/handle/123456789/2/thesis.pdf", "/handle/123456789/2"
C_PDF, C_PAGE = "/77/1/paper.pdf", "/id/eprint/77/"
A, B, C = ("dspace", "123456789/1"), ("dspace", "123456789/2"), ("eprints", "77")

EVENTS = [
    # who, time as logged, path, status   -- what COUNTER makes of it
    (U1, "15/Jan/2026:10:00:00 +0000", A_PDF, 200),   # 1  removed: #2 follows within 30 s
    (U2, "15/Jan/2026:10:00:10 +0000", A_PDF, 200),   # 7  counts: another browser, another session
    (U1, "15/Jan/2026:10:00:20 +0000", A_PDF, 200),   # 2  removed: #3 follows within 25 s
    (U1, "15/Jan/2026:10:00:45 +0000", A_PDF, 200),   # 3  counts (the last of the chain)
    (U1, "15/Jan/2026:10:05:00 +0000", A_PDF, 304),   # 4  counts (304); same session as #3
    (U1, "15/Jan/2026:10:05:10 +0000", A_PDF, 206),   # 5  not counted (206), and removes nothing
    (U1, "15/Jan/2026:10:05:20 +0000", A_PDF, 404),   # 6  not counted (404), and removes nothing
    (U1, "15/Jan/2026:10:20:00 +0000", A_PAGE, 200),  # 8  investigation, session of #3
    (BOT, "15/Jan/2026:10:30:00 +0000", A_PDF, 200),  # 9  robot
    (BOT, "15/Jan/2026:10:30:05 +0000", A_PAGE, 200),  #    robot
    (U3, "15/Jan/2026:10:59:50 +0000", B_PDF, 200),   # 10 removed by #11, across the hour
    (U3, "15/Jan/2026:11:00:10 +0000", B_PDF, 200),   # 11 counts, session hour 11
    (U3, "15/Jan/2026:11:30:00 +0000", B_PAGE, 200),  # 12 investigation, session of #11
    (U1, "15/Jan/2026:12:15:00 +0100", A_PDF, 200),   # 13 11:15 UTC: counts, a new session (hour 11)
    (U1, "15/Jan/2026:12:00:00 +0000", C_PAGE, 200),  # 14 investigation of C
    (U1, "15/Jan/2026:12:01:00 +0000", "/bitstream/handle/123456789/1/article.pdf.jpg?sequence=3", 200),  # thumbnail
    (U1, "15/Jan/2026:12:02:00 +0000", "/static/css/style.css", 200),  # not an item
    (U2, "01/Feb/2026:00:30:00 +0100", B_PDF, 200),   # 19 Jan 31 23:30 UTC: January
    (U3, "31/Jan/2026:23:59:50 +0000", C_PDF, 200),   # 17 removed by #18, across the month
    (U3, "01/Feb/2026:00:00:15 +0000", C_PDF, 200),   # 18 counts in February
    (U1, "10/Feb/2026:09:00:00 +0000", B_PDF, 200),   # 20 counts: #21 comes 31 s later
    (U1, "10/Feb/2026:09:00:31 +0000", B_PDF, 200),   # 21 removed: #22 follows within 29 s
    (U1, "10/Feb/2026:09:01:00 +0000", B_PDF, 200),   # 22 counts
    (U2, "10/Feb/2026:14:00:00 +0000", A_PDF, 200),   # 23 removed: #24 exactly 30 s later
    (U2, "10/Feb/2026:14:00:30 +0000", A_PDF, 200),   # 24 counts
    (U3, "10/Feb/2026:16:00:00 +0000", A_PDF, 206),   # 25 not counted, removes nothing
    (U3, "10/Feb/2026:16:00:10 +0000", A_PDF, 200),   # 26 counts
    (U3, "10/Feb/2026:16:05:00 +0000", A_PAGE, 200),  # 27 removed by #28
    (U3, "10/Feb/2026:16:05:05 +0000", A_PAGE, 200),  # 28 counts
]

# (Total_Item_Investigations, Total_Item_Requests, Unique_Item_Investigations, Unique_Item_Requests)
EXPECTED = {
    # A, January: requests #3 #4 (U1 h10), #7 (U2 h10), #13 (U1 h11); page #8 (U1 h10)
    (A, "2026-01"): (5, 4, 3, 3),
    # B, January: requests #11 (U3 h11), #19 (U2 Jan 31 h23); page #12 (U3 h11)
    (B, "2026-01"): (3, 2, 2, 2),
    (C, "2026-01"): (1, 0, 1, 0),  # page #14
    (A, "2026-02"): (3, 2, 2, 2),  # requests #24 (U2 h14), #26 (U3 h16); page #28 (U3 h16)
    (B, "2026-02"): (2, 2, 1, 1),  # requests #20, #22 (U1 h09)
    (C, "2026-02"): (1, 1, 1, 1),  # request #18 (U3 Feb 1 h00)
}
PLATFORM = {"2026-01": (9, 6, 6, 5), "2026-02": (6, 5, 4, 4)}
METRICS = ("Total_Item_Investigations", "Total_Item_Requests", "Unique_Item_Investigations", "Unique_Item_Requests")


def lines() -> list[str]:
    return [f'{ip} - - [{stamp}] "GET {path} HTTP/1.1" {status} {1234 if status in (200, 206) else 0} '
            f'"-" "{agent}"' for (ip, agent), stamp, path, status in EVENTS]


def expected_item(item: tuple[str, str], metric: str) -> dict[str, int]:
    index = METRICS.index(metric)
    return {month: counts[index] for (it, month), counts in EXPECTED.items() if it == item and counts[index]}


def expected_platform(metric: str) -> dict[str, int]:
    index = METRICS.index(metric)
    return {month: counts[index] for month, counts in PLATFORM.items() if counts[index]}
