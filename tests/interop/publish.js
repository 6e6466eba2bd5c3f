'use strict'
/*
 * Scenario (a): connect, publish --count messages one at a time (each waits for its
 * PubAck), close.
 *
 *   node publish.js --url nats://127.0.0.1:4222 --cluster C --client ID --channel CH
 *                   [--count 10] [--prefix msg-] [--start 1] [--timeout-ms 30000]
 *
 * Message i (i = start .. start+count-1) has data "<prefix><i>". --count 0 just
 * connects and closes (useful to take over a client ID).
 * Events: connected, published {n, guid, data}, closed, summary {published, guids}, done.
 */
const lib = require('./lib')

lib.run(async (c) => {
  const channel = lib.str('channel', 'interop')
  const count = lib.int('count', 10)
  const prefix = lib.str('prefix', 'msg-')
  const start = lib.int('start', 1)

  const sc = await lib.connect(c)
  const guids = []
  for (let i = start; i < start + count; i++) {
    const data = `${prefix}${i}`
    lib.setStage(`publishing ${data} to ${channel}`)
    const guid = await lib.publish(sc, channel, data)
    guids.push(guid)
    lib.emit('published', { n: i, guid, data })
  }
  await lib.close(sc)
  lib.emit('summary', { published: guids.length, guids })
})
