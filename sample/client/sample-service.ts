/** The token of the one ClientSmux every client of the sample injects: one connection, a stream per call. */
export const SAMPLE_SERVICE = 'SAMPLE_SERVICE';
