// A real MQTT client (MQTT.js) over WebSocket, for the integration tests.
//   node ws.js sub URL TOPIC VERSION   -> prints "subscribed", then the first message as JSON, exits 0
//   node ws.js pub URL TOPIC VERSION PAYLOAD -> publishes QoS 1, exits 0 once acknowledged
// VERSION is 4 (3.1.1) or 5. Exits 2 on any error or after 10 s.
const mqtt = require('mqtt');
const [mode, url, topic, version, payload] = process.argv.slice(2);
const client = mqtt.connect(url, {
  protocolVersion: Number(version),
  clientId: `ws-${mode}-${process.pid}`,
  reconnectPeriod: 0,
  connectTimeout: 5000,
});
const fail = (why) => { console.error(String(why)); process.exit(2); };
setTimeout(() => fail('timeout'), 10000);
client.on('error', fail);
client.on('connect', () => {
  if (mode === 'sub') {
    client.subscribe(topic, { qos: 1 }, (err, granted) => {
      if (err) return fail(err);
      console.log(JSON.stringify({ subscribed: granted.map(g => g.qos) }));
    });
    client.on('message', (t, p) => {
      console.log(JSON.stringify({ topic: t, payload: p.toString() }));
      client.end(false, () => process.exit(0));
    });
  } else {
    client.publish(topic, payload, { qos: 1 }, (err) => {
      if (err) return fail(err);
      client.end(false, () => process.exit(0));
    });
  }
});
