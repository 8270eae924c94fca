<?php
/**
 * Drives the real module code (jobgate.php and its classes) under php-cli, on the stubs of
 * stubs.php, one "shop request" per run; the shop database is the SQLite file in
 * JOBGATE_TEST_DB, so runs share it like requests share MySQL.
 *
 *   php module.php install URL TENANT SECRET [SITE]   install + save the configuration page
 *   php module.php order ID                           a checkout: hooks fire, events are stored
 *   php module.php product ID                         a product save: many hooks, one event
 *   php module.php cron [LIMIT]                       the cron controller's run
 *   php module.php due-now                            every waiting event becomes due (time passes)
 *   php module.php rows                               the module table
 *   php module.php ping                               the configuration page's "test connection"
 *   php module.php page                               the configuration page's status panel
 *   php module.php configure [JSON]                   the whole configuration page (JSON: submitted form)
 *   php module.php upgrade-from-1.0.0                 the 1.0.0 table, then upgrade/upgrade-1.1.0.php
 *   php module.php uninstall
 * With JOBGATE_TEST_FPM=1, fastcgi_finish_request() exists (as under PHP-FPM) and records the
 * moment the response was handed back; each run prints one JSON line.
 */
require __DIR__ . '/stubs.php';
require __DIR__ . '/../jobgate/jobgate.php';

if (getenv('JOBGATE_TEST_FPM') === '1') {
    /** Under FPM this closes the connection to the customer; here it records when. */
    function fastcgi_finish_request()
    {
        $GLOBALS['jobgate_test_finished'] = true;
        echo json_encode(array('response_finished' => true, 'unsent' => (new JobgateOutbox())->countUnsent())) . "\n";
        return true;
    }
}

function rows()
{
    return Db::getInstance()->executeS('SELECT id_jobgate_event, message_id, body, attempts, next_attempt_at, failed, last_status FROM ps_jobgate_event ORDER BY id_jobgate_event');
}

$module = new Jobgate();
$command = isset($argv[1]) ? $argv[1] : '';
switch ($command) {
    case 'install':
        $ok = $module->install();
        // The machine running the tests is loaded: never fail a delivery on a slow answer.
        Configuration::updateValue('JOBGATE_TIMEOUT_MS', 60000);
        Tools::$submitted = array(
            'submitJobgate' => '1',
            Jobgate::CONFIG_URL => $argv[2],
            Jobgate::CONFIG_TENANT => $argv[3],
            Jobgate::CONFIG_SECRET => $argv[4],
            Jobgate::CONFIG_SITE => isset($argv[5]) ? $argv[5] : '',
        );
        $reflection = new ReflectionMethod($module, 'saveSettings');
        $reflection->setAccessible(true);
        $saved = $reflection->invoke($module);
        echo json_encode(array(
            'installed' => $ok,
            'saved' => strpos($saved, 'alert-success') !== false,
            'hooks' => $module->registeredHooks,
            'site_id' => Configuration::get(Jobgate::CONFIG_SITE),
        )) . "\n";
        break;
    case 'order':
        $order = new OrderStub((int) $argv[2], 'XKBKNABJK', 2);
        $module->hookActionValidateOrder(array('order' => $order));
        echo json_encode(array('request_done' => true, 'unsent' => $module->outbox()->countUnsent())) . "\n";
        break;
    case 'product':
        $id = (int) $argv[2];
        $module->hookActionProductUpdate(array('id_product' => $id));
        $module->hookActionObjectProductUpdateAfter(array('object' => (object) array('id' => $id)));
        $module->hookActionProductUpdate(array('id_product' => $id));
        echo json_encode(array('request_done' => true, 'unsent' => $module->outbox()->countUnsent())) . "\n";
        break;
    case 'cron':
        echo json_encode($module->sendDue(isset($argv[2]) ? (int) $argv[2] : Jobgate::CRON_BATCH)) . "\n";
        break;
    case 'due-now':
        Db::getInstance()->update('jobgate_event', array('next_attempt_at' => 0), '`failed` = 0');
        echo json_encode(array('unsent' => $module->outbox()->countUnsent())) . "\n";
        break;
    case 'rows':
        echo json_encode(rows()) . "\n";
        break;
    case 'ping':
        echo json_encode($module->testConnection()) . "\n";
        break;
    case 'page':
        $reflection = new ReflectionMethod($module, 'renderStatus');
        $reflection->setAccessible(true);
        echo json_encode(array('html' => $reflection->invoke($module), 'cron_token' => $module->cronToken())) . "\n";
        break;
    case 'upgrade-from-1.0.0':
        Db::getInstance()->execute('CREATE TABLE IF NOT EXISTS `ps_jobgate_event` (
            `id_jobgate_event` INT UNSIGNED NOT NULL AUTO_INCREMENT,
            `message_id` VARCHAR(64) NOT NULL,
            `body` TEXT NOT NULL,
            `attempts` INT UNSIGNED NOT NULL DEFAULT 0,
            `next_attempt_at` INT UNSIGNED NOT NULL DEFAULT 0,
            `date_add` DATETIME NOT NULL,
            PRIMARY KEY (`id_jobgate_event`),
            KEY `next_attempt_at` (`next_attempt_at`)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;');
        Db::getInstance()->insert('jobgate_event', array('message_id' => 'msg_old', 'body' => '{}', 'attempts' => 3, 'next_attempt_at' => 0, 'date_add' => '2026-01-01 00:00:00'));
        require __DIR__ . '/../jobgate/upgrade/upgrade-1.1.0.php';
        echo json_encode(array('upgraded' => upgrade_module_1_1_0($module), 'rows' => rows(), 'unsent' => $module->outbox()->countUnsent())) . "\n";
        break;
    case 'configure':
        Tools::$submitted = isset($argv[2]) ? json_decode($argv[2], true) : array();
        echo json_encode(array('html' => $module->getContent(), 'secret' => Configuration::get(Jobgate::CONFIG_SECRET))) . "\n";
        break;
    case 'uninstall':
        $ok = $module->uninstall();
        $table = Db::getInstance()->getValue("SELECT COUNT(*) FROM sqlite_master WHERE name = 'ps_jobgate_event'");
        echo json_encode(array('uninstalled' => $ok, 'table_left' => (int) $table)) . "\n";
        break;
    default:
        fwrite(STDERR, "unknown command\n");
        exit(2);
}
