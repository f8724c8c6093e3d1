"""Runs localstripe 1.15.10 with every change on disk before its answer, and a checkpoint.

localstripe pickles its whole store to /tmp/localstripe.pickle on every write
(each object it creates, and again after every POST or DELETE): at 50,000
objects that is ~0.3 s of pickling per write, several writes per PaymentIntent.
Its loader also rewrites that file while still reading it (unpickling a Store
calls Store.__setitem__, which dumps), so a store of more than ~1,000 objects
cannot be loaded again and is truncated on disk. And every list endpoint scans
the whole store: exporting one PaymentIntent lists its charge's refunds six times.

The launcher (`.venv/bin/python -m stack.localstripe`) starts localstripe's own entry
point (localstripe.server.start) with these replaced first; the HTTP API is unchanged:

  save_store_middleware     (in the app's middlewares) answers a request only once
                            the objects it stored, deleted, changed or read (to
                            change in place) are appended to the change log and
                            fsynced; one write serves all requests of that moment
  Store.dump_to_disk        only marks the store changed; a forked child pickles a
                            copy-on-write snapshot, the checkpoint, at most once per
                            --interval (the server never stops to pickle), and a
                            final one happens at SIGTERM/SIGINT; a checkpoint in
                            place deletes the log segments it covers
  Store.try_load_from_disk  reads --store, writing nothing while it does, then
                            replays the log's whole commits over it
  Store.__setitem__/__delitem__/clear/get, StripeObject.__setattr__
                            also note what changed, and keep an index of keys by type
  StripeObject._api_list_all     reads that index instead of scanning the store

A checkpoint goes to a temporary file beside the store, then os.replace: a kill -9
mid-write leaves the previous store whole, and the log still holds everything
since. The pickle is localstripe's own format. Each replaced function is compared
with the 1.15.10 source at start; any difference stops the launcher with a message.
"""
