// One step of an end-to-end scenario with a real Nostr client (nostr-tools 2 over `ws`), so a
// Rust test can drive a relay URL through worker loss and return. Prints one JSON line.
//   node nostr_tools_step.mjs <url> query '<filter JSON>'         -> {ok, ids:[…]} (stored, up to EOSE)
//   node nostr_tools_step.mjs <url> publish <secret hex> <text>   -> {ok, id, accepted, message}
// Exit 0 when the step ran (a refused publish is a result, not a failure), 1 otherwise.
import WebSocket from 'ws';
import { finalizeEvent } from 'nostr-tools/pure';
import { Relay, useWebSocketImplementation } from 'nostr-tools/relay';

useWebSocketImplementation(WebSocket);
const done = (report, code = 0) => { console.log(JSON.stringify(report)); process.exit(code); };
setTimeout(() => done({ ok: false, why: 'timed out' }, 1), 20000).unref();

const [url, step, ...args] = process.argv.slice(2);
try {
  const relay = await Relay.connect(url);
  if (step === 'query') {
    const filter = JSON.parse(args[0]);
    const ids = await new Promise((resolve) => {
      const got = [];
      const sub = relay.subscribe([filter], {
        onevent: (e) => got.push(e.id),
        oneose: () => { sub.close(); resolve(got); },
      });
    });
    relay.close();
    done({ ok: true, ids });
  } else if (step === 'publish') {
    const event = finalizeEvent(
      { kind: 1, created_at: Math.floor(Date.now() / 1000), tags: [], content: args[1] },
      Uint8Array.from(Buffer.from(args[0], 'hex')),
    );
    let accepted = true;
    let message = '';
    try {
      message = await relay.publish(event);
    } catch (reason) {
      accepted = false;
      message = String(reason);
    }
    relay.close();
    done({ ok: true, id: event.id, accepted, message });
  } else {
    done({ ok: false, why: `unknown step ${step}` }, 1);
  }
} catch (error) {
  done({ ok: false, why: String(error) }, 1);
}
