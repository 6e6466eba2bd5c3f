'use strict'
/*
 * Scenario (c): --members queue subscribers (m1, m2, ...) on one connection, same
 * channel and queue group, automatic acks. Once every member is ready the script
 * publishes --count messages itself (each waits for its PubAck), waits until every
 * published message has arrived at some member, waits --settle-ms more to catch
 * duplicates, then closes.
 *
 *   node queue.js --url U --cluster C --client ID --channel CH [--group workers]
 *                 [--members 2] [--count 20] [--prefix q-] [--settle-ms 500]
 *                 [--max-inflight N] [--timeout-ms 30000]
 *
 * Events: connected, ready (one per member), published, received {member, seq, ...},
 * closed, summary {members: {m1: [seq...], m2: [...]}, duplicates: [seq...],
 * published: n}, done. The script does not judge the distribution; the test does.
 */
const lib = require('./lib')

lib.run(async (c) => {
  const channel = lib.str('channel', 'interop')
  const group = lib.str('group', 'workers')
  const nMembers = lib.int('members', 2)
  const count = lib.int('count', 20)
  const prefix = lib.str('prefix', 'q-')
  const settleMs = lib.int('settle-ms', 500)
  const maxInFlight = lib.int('max-inflight', 0)

  const sc = await lib.connect(c)
  const members = {}
  const seen = new Map() // seq -> number of deliveries
  const duplicates = []
  let allArrived
  const arrived = new Promise((resolve) => { allArrived = resolve })
  const check = () => { if (seen.size >= count) allArrived() }

  for (let i = 1; i <= nMembers; i++) {
    const name = `m${i}`
    const opts = sc.subscriptionOptions()
    if (maxInFlight > 0) opts.setMaxInFlight(maxInFlight)
    lib.setStage(`subscribing ${name} to queue ${group} on ${channel}`)
    members[name] = []
    await lib.subscribe(sc, channel, group, opts, name, (msg) => {
      const r = lib.received(name, msg, true) // automatic ack after this handler
      members[name].push(r.seq)
      const n = (seen.get(r.seq) || 0) + 1
      seen.set(r.seq, n)
      if (n > 1) duplicates.push(r.seq)
      check()
    })
  }

  for (let i = 1; i <= count; i++) {
    const data = `${prefix}${i}`
    lib.setStage(`publishing ${data} to ${channel}`)
    const guid = await lib.publish(sc, channel, data)
    lib.emit('published', { n: i, guid, data })
  }
  lib.setStage(() => `waiting for ${count} distinct messages across ${nMembers} members (have ${seen.size})`)
  check()
  await arrived
  lib.setStage(`settling ${settleMs}ms to catch duplicate deliveries`)
  await new Promise((resolve) => setTimeout(resolve, settleMs))
  await lib.close(sc)
  lib.emit('summary', { members, duplicates, published: count })
})
