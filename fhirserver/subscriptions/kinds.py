"""The store job kinds and record kinds of the subscription engine."""

# Jobs. MATCH has the one key MATCH_KEY; one matcher at a time, across processes, is
# kept by the MATCHING lock (the job's lease does not: a Subscription write puts the
# job again, free to claim, while a matcher may be running it). DELIVER and HANDSHAKE
# are keyed by the Subscription id.
MATCH = "subscription.match"
MATCH_KEY = "change-log"
DELIVER = "subscription.deliver"
HANDSHAKE = "subscription.handshake"
# The payload of a DELIVER job for a subscription turned on again: failures before
# it no longer count against the retry window.
RESTART = b'{"restart": true}'

# Records. The matcher's cursor in the change log (key MATCH_KEY); per subscription
# (key: its id) how many events were recorded, and how far delivery got; per
# subscription, its events (kind EVENTS + id, key the zero-padded number); the
# delivery lock of a subscription (expiring, so a dead deliverer's passes on; owned,
# lock.py, so a deliverer whose lock ran out touches nobody else's).
CURSOR = "subscription.cursor"
COUNT = "subscription.count"
DELIVERY = "subscription.delivery"
EVENTS = "subscription.events/"
DELIVERING = "subscription.delivering"
# The matcher's lock (key MATCH_KEY): expiring and owned like DELIVERING.
MATCHING = "subscription.matching"
