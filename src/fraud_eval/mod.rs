//! `clicktrail fraud eval`: the fraud engine measured on labelled traffic.
//!
//! One command generates 28 days of seeded traffic of a made-up affiliate program (the 28
//! whole UTC days before today, so a seed gives the same events all day)
//! ([`traffic`]), starts a fresh server on it, imports it through `POST /api/v1/import`,
//! waits for the scorer, reads every verdict and prints how they compare with the labels
//! ([`metrics`]), per pattern, per rule and overall, for clicks and for conversions
//! ([`run`]). Nothing here is tuned to the rules: the traffic is meant to look like a real
//! program's, with its awkward parts, and the numbers are whatever the rules make of it.
//!
//! # The program
//!
//! Six merchants (fashion, electronics, travel, beauty, software, grocery) with their own
//! order-id habits: prefixed random ids, booking references, UUIDs, and three shop
//! counters (`104233`) that number every order of the shop and start anywhere from a new
//! shop's 1001 to an old one's two million (drawn per seed, so two counters can overlap).
//! Seven campaigns: electronics and beauty are brand-protected (`paid-search = false`),
//! a fashion display campaign requires an impression and forbids paid search, the
//! software campaign pays per trial sign-up (`lead` events, no amount), the others allow
//! paid search. The configuration lists eight data-centre ranges (cloud hosting, and the
//! hosting where commercial VPNs rent their exits) and two blocked ranges.
//!
//! # Legitimate traffic
//!
//! Thirty-two legitimate affiliates of four kinds, volumes heavy-tailed within a kind
//! (log-normal weights, σ 0.9), ~133k clicks at scale 1 (~160k legitimate clicks with the
//! real traffic of the eight affiliates that also cheat):
//!
//! | kind | clicks | conversion rate | referrer | when | click to conversion |
//! |---|---|---|---|---|---|
//! | content (12) | 56k | 2-4.5% | their registered site (origin only, 15% a full URL, 5% none); a quarter of them also post links on Pinterest or YouTube, unregistered (10% of their clicks) | steady by hour of day, a viral day now and then (3-8× a day's clicks, decaying over hours) | 70% same session (log-normal, median 12 min), 30% days later (median 1.5 days) |
//! | coupon (8) | 32k | 3.5-5% | their site; 10% of clicks on campaigns that allow it come from their own search ads (gclid) | steady | already at the checkout: 4 s + log-normal median 70 s (σ 0.85), 10% hours later |
//! | e-mail (6) | 25k | 1.5-3.5% | none mostly; webmail sends some (12% `mail.google.com`, 5% the Gmail app `android-app://com.google.android.gm/`, Outlook, Yahoo); no registered sites | weekly or twice-weekly sends: 60% of a send's clicks within ~2 h, the rest over a day | 45% median 20 min, 55% median 14 h |
//! | social (6) | 20k | 1-3% | `l.facebook.com`, `l.instagram.com`, `t.co`, TikTok, Pinterest, or none (in-app browsers); fbclid on most Facebook and Instagram clicks; two thirds registered the platforms they post on (as `x.com` for X, whose links come from `t.co`), a third only their blog | 2-4 posts a week, clicks decaying over ~5 h, a trickle from the bio link | 55% median 15 min, 45% median 1.2 days |
//!
//! Conversion rates are multiplied per campaign (travel 0.5, electronics 0.7, display
//! 0.6, grocery 1.2, beauty 1.1, sign-ups 1.8). People: one click in eight is by someone
//! who clicked before (another partner, a repeat purchase); the rest are new. A person has
//! a laptop (70%) and/or a phone, one language, a home address (18% IPv6), a carrier (six,
//! each NATing its subscribers behind four /24s: several visitors per address over the
//! month), and sometimes a commercial VPN (2.5% of people, 70% of their desktop sessions,
//! from data-centre ranges), iCloud Private Relay (6% of iPhone Safari users; shared
//! egress, not listed as data centre), a pixel blocker (8%) or the habit of clearing
//! cookies (15%). Phones are on home Wi-Fi half the time. Browsers are Chrome, Edge,
//! Safari, Firefox, Samsung Internet and Chrome on iOS in current versions at their market
//! shares, with the ones that send no `Sec-Fetch-*` (Safari before 16.4, Chrome on iOS
//! before 16.4, Firefox 78) at theirs; social clicks open in the apps' in-app browsers 60%
//! of the time. Everyone sends `Accept-Language`. The visitor cookie comes back on a later
//! click when the browser kept it (30 days; 7 in Safari; never for people who clear).
//! Impressions: a banner click on the display campaign follows its impression by seconds to
//! minutes, unless the visitor blocks our pixel (8%: blocker users who block it; we chose
//! this over 0% because blockers are common on desktop and a self-hosted tracker's pixel
//! path is on some lists, and over 25% because most lists do not know this tracker).
//! Invalid but not fraudulent: search crawlers follow 1% of content sites' links, and link
//! previews (Facebook, WhatsApp) fetch 0.6% of social links; labelled `bot-user-agent`.
//! Buyers: a conversion comes from the click's device and address within two hours, later
//! from either device; a customer id when logged in (65%), the e-mail always.
//!
//! # Fraud
//!
//! One affiliate per pattern at least, at volumes that make 10-15% of conversions and a
//! quarter of clicks fraudulent (pattern: how, ~clicks / ~conversions at scale 1):
//!
//! * `click-flood-ip`: a click bot on one residential proxy, 15-80 clicks in 1-2 minutes,
//!   rotating browser user agents, 40 bursts; 2.5% of its sign-up clicks become leads.
//!   1.8k / 12.
//! * `click-flood-subnet`: a phone farm behind one /24 (two farms), 50-150 clicks a burst
//!   from its addresses, 25 bursts; leads. 2.5k / 20.
//! * `click-flood-device`: malware re-firing links in a fresh web view on 25 devices (same
//!   address, user agent and language, no cookie: one fingerprint, and one address too),
//!   11-30 clicks a burst; the owner's own purchase is credited to the last one. 2.6k / 5.
//! * `click-flood-visitor`: an extension re-firing links in the user's browser (cookie
//!   kept), 6-9 clicks a burst (under the address and device limits). 0.7k / 4.
//! * `click-spike`: a real content site buys pop-under traffic twice, 1.5-4k clicks over
//!   3-6 hours each (foreign or no referrers); a few buyers. 3.5-6k / 3-8.
//! * `bot-user-agent`: form bots (python-requests, curl, okhttp, HeadlessChrome) on the
//!   sign-up campaign, 40% from cloud hosting; plus the crawlers and previews above, and
//!   3% of a social affiliate's bought clicks. 2.4k / 34.
//! * `bot-missing-headers`: a Chrome user agent with neither `Accept-Language` nor
//!   `Sec-Fetch-*`. 1.2k / 10.
//! * `bot-datacenter`: full browser headers from cloud addresses; also 15% of a social
//!   affiliate's clicks (bought). 1.6k / 12.
//! * `bot-blocked-range`: full browser headers from the blocked ranges. 0.5k / 11.
//! * `click-injection`: an extension fires the link on the merchant's checkout or cart
//!   page (the referrer is the merchant's own page); the purchase follows after a
//!   log-normal 6 s (σ 0.8: a quarter take over 10 s); 40% of checkouts are abandoned.
//!   150 / 90.
//! * `click-spamming`: an ad SDK or pop-under fires clicks for everyone it reaches (mostly
//!   phones, foreign or no referrer); the few who buy anything within 30 days are credited
//!   at a flat delay. 20k / 42.
//! * `stuffing-hidden`: a forum's pages load the link in a hidden iframe or image
//!   (`Sec-Fetch-Dest` iframe/image, none in browsers without Sec-Fetch); no cookie of ours
//!   is sent (SameSite=Lax) and the merchant's cookie only sticks in Chromium; also 10% of
//!   a content site's clicks. 8.4k / 36.
//! * `stuffing-foreign-referrer`: redirect chains and pop-unders from sites the affiliate
//!   never registered (35% with no referrer). 5k / 26.
//! * `stuffing-no-impression`: text links on the display-only campaign. 1.5k / 17.
//! * `stuffing-many-merchants`: one page view opens three to five merchants' links within
//!   seconds (top-level windows: after the first, the browser sends our cookie). 3.2k / 14.
//! * `self-referral-email`: a blogger buys through her own links with her own e-mail (15%
//!   of the time upper-cased, 15% a `+tag` or dot-less Gmail variant); the address the
//!   network has for her is stale. 22 / 22.
//! * `self-referral-device`: a reviewer buys from his home address, which the network
//!   has (a quarter from his phone on the carrier instead). 25 / 25.
//! * `duplicate-order`: a conversion pixel replayed: six in ten of a grocery partner's
//!   real grocery orders are replayed as beauty orders 1-72 h later, same order id, with a
//!   click made just before from the buyer's address. 48 / 48.
//! * `repeat-customer`: eight customers of a cashback site split a basket into 3-6 orders
//!   within hours, each on a fresh click. 34 / 34.
//! * `brand-bidding`: search ads on the brand-protected campaigns, straight to the link
//!   (Google: gclid and a google.com referrer, 75%; Bing: msclkid, 15%) or laundered
//!   through the affiliate's own page (10%, no trace); by a dedicated affiliate and on 20%
//!   of a coupon site's clicks there; brand searchers convert at 6%. 2.1k / 130.
//!
//! Not generated: `impossible-client-hints` (client hints are not in the import format;
//! the output says so). The fingerprint flood is also an address flood: the server's
//! fingerprint is the address, user agent and language, so one device is one address.
//!
//! # Labels
//!
//! Every click and conversion is `legit` or its pattern's name, with a variant
//! (`labels.csv` with `--keep`). A conversion of a fraudulent click is fraudulent: the
//! conversion is what gets paid. Conversion patterns (self-referral, duplicate order,
//! repeat customer) label the conversion and its click. A legitimate conversion whose
//! click was real traffic of an affiliate that also cheats is `legit`: the sale was
//! brought by that click and a reviewer would pay it; its source (below) says `-mixed`, so
//! the false positives on such affiliates can be told apart.
//!
//! # Measures
//!
//! A subject (click or conversion) is *flagged* when its latest verdict is `review` or
//! `reject`. Every conversion has a verdict; a click only from review up, so a click
//! without one was allowed. Per kind: precision = flagged fraudulent / flagged; recall =
//! flagged fraudulent / fraudulent; false-positive rate (FPR) = flagged legitimate /
//! legitimate. Per pattern: recall, and how many of its subjects the rule meant for it hit.
//! Per rule: hits (subjects whose verdict names it, flagged or not; for clicks only the
//! flagged ones are seen), precision (fraudulent hits / hits), FPR (legitimate hits / all
//! legitimate subjects), and "FP by": legitimate flagged subjects whose other hits
//! combined stay under the review threshold, so this rule alone flagged them. Per source
//! (the affiliate's kind, `-mixed` if it also cheats): legitimate subjects and how many
//! were flagged. The targets are the issue's, on conversions: FPR under 0.5% while recall
//! is at least 95%; each is PASS or MISS.
//!
//! # The run
//!
//! Events go in time order, 20,000 lines a request; a conversion whose click went in an
//! earlier request names it by the id the import answered. After each request the harness
//! waits until the scorer has scored everything sent (so the anomaly model, trained at
//! the scorer's first idle moment with 500 conversions, is trained at the same point in
//! every run), and at the end until nothing changes for two seconds (later evidence makes
//! earlier verdicts stricter). The server is this executable's `serve`, on a new data
//! directory and a free loopback port, stopped with SIGTERM at the end.

pub mod metrics;
pub mod run;
pub mod traffic;

pub use run::{run, Options};
