// A real Nostr client (nostr-tools 2 over `ws`) against a hypergate relay URL (argv[2]):
// subscribe, publish, receive the event live, read it back with REQ, and get a tampered event
// refused with `invalid:`. Prints one JSON line and exits 0 on success, 1 on any failure.
import WebSocket from 'ws';
import { finalizeEvent, generateSecretKey, getPublicKey, verifyEvent } from 'nostr-tools/pure';
import { Relay, useWebSocketImplementation } from 'nostr-tools/relay';

useWebSocketImplementation(WebSocket);
const fail = (why) => { console.log(JSON.stringify({ ok: false, why: String(why) })); process.exit(1); };
setTimeout(() => fail('timed out'), 20000).unref();

try {
  const relay = await Relay.connect(process.argv[2]);
  const sk = generateSecretKey();
  const pk = getPublicKey(sk);

  let live;
  const liveEvent = new Promise((resolve) => { live = resolve; });
  await new Promise((eose) => {
    relay.subscribe([{ kinds: [1], authors: [pk] }], { onevent: (e) => live(e), oneose: eose });
  });

  const event = finalizeEvent(
    { kind: 1, created_at: Math.floor(Date.now() / 1000), tags: [['t', 'hypergate']], content: 'hello from nostr-tools' },
    sk,
  );
  await relay.publish(event);
  const received = await liveEvent;
  if (received.id !== event.id || !verifyEvent(received)) fail('live event differs');

  const stored = await new Promise((resolve) => {
    const got = [];
    const sub = relay.subscribe([{ ids: [event.id] }], {
      onevent: (e) => got.push(e),
      oneose: () => { sub.close(); resolve(got); },
    });
  });
  if (stored.length !== 1 || stored[0].id !== event.id) fail(`read back ${stored.length} events`);

  let refusal = null;
  try {
    await relay.publish({ ...event, content: 'tampered' });
  } catch (reason) {
    refusal = String(reason);
  }
  if (refusal === null || !refusal.includes('invalid:')) fail(`tampered event not refused: ${refusal}`);

  relay.close();
  console.log(JSON.stringify({ ok: true, id: event.id, refusal }));
  process.exit(0);
} catch (error) {
  fail(error);
}
