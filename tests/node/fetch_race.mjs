// Node's fetch (undici) against a server's idle close: the client side of
// the idle-close race (see docs/deployment.md, "The keep-alive hint").
//
// usage: node fetch_race.mjs '{"urls": [...], "gapsMs": [...]}'
//
// One chain per URL, all at once.  Each URL is its own origin (its own
// port), so undici gives each chain its own connection pool: a chain sends
// a request, reads the whole response, waits the next gap, sends the next,
// so that its one kept-alive connection sits idle for exactly those gaps.
// Prints one JSON object: {"requests", "failures", "errors": [...]}.
const { urls, gapsMs } = JSON.parse(process.argv[2]);

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function chain(url, offset) {
  const errors = [];
  let requests = 0;
  for (let i = 0; i <= gapsMs.length; i++) {
    if (i > 0) {
      // Shift the gaps per chain so that chains do not run in lockstep.
      await sleep(gapsMs[(i - 1 + offset) % gapsMs.length]);
    }
    requests++;
    try {
      const response = await fetch(url);
      await response.arrayBuffer();
      if (response.status !== 200) {
        errors.push(`status ${response.status}`);
      }
    } catch (error) {
      const cause = error.cause ? `: ${error.cause.code || error.cause.message}` : "";
      errors.push(`${error.message}${cause} (after ${i > 0 ? gapsMs[(i - 1 + offset) % gapsMs.length] : 0} ms idle)`);
    }
  }
  return { requests, errors };
}

const results = await Promise.all(urls.map((url, index) => chain(url, index)));
const errors = results.flatMap((result) => result.errors);
console.log(
  JSON.stringify({
    requests: results.reduce((sum, result) => sum + result.requests, 0),
    failures: errors.length,
    errors,
  }),
);
