import { RedisServer } from '../src/testing/index.js';
import { defineBehaviourSuite } from './behaviour/suite.js';

defineBehaviourSuite('a single Redis', async () => {
  const server = await RedisServer.start();
  return { workerOptions: () => ({ redis: server.url }), close: () => server.stop() };
});
