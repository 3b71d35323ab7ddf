/**
 * What the program relies on in the service image (Dockerfile at the repository root); a test
 * checks that the Dockerfile says the same.
 */

/** The port the service listens on inside its container (the Dockerfile's PORT and EXPOSE). */
export const servicePort = 3000;

/**
 * Healthy means ready: answering and connected to its database. The image has no curl, so Node
 * asks. The Dockerfile's HEALTHCHECK runs the same command.
 */
export const serviceHealthcheck = [
  'CMD',
  'node',
  '-e',
  "fetch('http://127.0.0.1:'+(process.env.PORT||3000)+'/readyz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))",
];
