<?php
/**
 * Cross-language check: signs with the module's own code.
 * stdin: {"secrets": [...], "id": "...", "timestamp": 123, "body": "..."}
 * stdout: the headers as JSON.
 */
require __DIR__ . '/../jobgate/classes/JobgateSigner.php';

$input = json_decode(stream_get_contents(STDIN), true);
if (!is_array($input)) {
    fwrite(STDERR, "expected a JSON object on stdin\n");
    exit(2);
}
echo json_encode(JobgateSigner::headers($input['secrets'], $input['id'], $input['timestamp'], $input['body']));
