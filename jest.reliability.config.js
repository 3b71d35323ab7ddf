/** Fault, fuzz and rotation scenarios: slower, bounded to a few minutes in total. */
const base = require('./jest.config.js');
module.exports = {
  ...base,
  roots: ['<rootDir>/service/test/reliability'],
  testPathIgnorePatterns: ['/node_modules/', '/dist/'],
  testTimeout: 180000,
};
