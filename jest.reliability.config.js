/** Fault, fuzz and rotation scenarios: slower than the main suite, hence the longer timeout per test. */
const base = require('./jest.config.js');
module.exports = {
  ...base,
  roots: ['<rootDir>/service/test/reliability'],
  testPathIgnorePatterns: ['/node_modules/', '/dist/'],
  testTimeout: 180000,
};
