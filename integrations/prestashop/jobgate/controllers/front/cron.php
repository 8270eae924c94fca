<?php
/**
 * Retries stored events from a cron job:
 *   curl "https://shop.example/index.php?fc=module&module=jobgate&controller=cron&token=..."
 * The token is the first 32 hex characters of sha256("jobgate-cron:" . secret).
 */
class JobgateCronModuleFrontController extends ModuleFrontController
{
    public function initContent()
    {
        $secret = (string) Configuration::get(Jobgate::CONFIG_SECRET);
        $expected = substr(hash('sha256', 'jobgate-cron:' . $secret), 0, 32);
        $token = (string) Tools::getValue('token');
        header('Content-Type: application/json');
        if ($secret === '' || !hash_equals($expected, $token)) {
            http_response_code(403);
            die(json_encode(array('error' => 'forbidden')));
        }
        die(json_encode(array('delivered' => $this->module->retryPending(50))));
    }
}
