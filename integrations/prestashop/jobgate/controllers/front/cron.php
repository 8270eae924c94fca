<?php
/**
 * Sends due events (new ones when PHP-FPM is not available, and every retry), a bounded
 * batch per call. The URL, token included, is shown on the module's configuration page:
 *   index.php?fc=module&module=jobgate&controller=cron&token=...
 */
class JobgateCronModuleFrontController extends ModuleFrontController
{
    public function initContent()
    {
        $expected = $this->module->cronToken();
        $token = (string) Tools::getValue('token');
        header('Content-Type: application/json');
        header('Cache-Control: no-store');
        if ($expected === '' || !hash_equals($expected, $token)) {
            http_response_code(403);
            die(json_encode(array('error' => 'forbidden')));
        }
        die(json_encode($this->module->sendDue(Jobgate::CRON_BATCH)));
    }
}
